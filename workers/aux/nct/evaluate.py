"""Evaluation of a controlled one-step generator on INDEPENDENTLY drawn (z, c) (brief 2(e), 2(f)).

Shape legend: B batch, C channels, H x W image size.

c is extracted from the frozen generator's samples at other noises z', so (z, c) ~ p(z) p(c): the
setting Theorem 1 is about and the one the boundary loss alone cannot solve. Every output is one
forward pass f_{theta,phi}(z, c).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from workers.aux.common.metrics import digits_frechet_distance
from workers.aux.common.one_step import OneStepGenerator
from workers.aux.nct.controls import ConditionModel, sobel_edges

Controlled = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EvalSet:
    """Fixed evaluation draws shared by every variant: noises, independent conditions, references."""

    z: torch.Tensor  # (B, C, H, W) the noises fed to the controlled generator
    cond: torch.Tensor  # c = h(f_theta(z')), z' independent of z
    coupled_z: torch.Tensor  # noises of the coupled (boundary) check
    base_samples: torch.Tensor  # f_theta(z'') uncontrolled, the fidelity reference of the paper's FID
    test_images: torch.Tensor  # held-out digits (never seen by the generator or the adapter)


@torch.no_grad()
def make_eval_set(generator: OneStepGenerator, cond: ConditionModel, num: int, seed: int,
                  test_images: torch.Tensor, device: torch.device) -> EvalSet:
    """Draw the evaluation noises and conditions from their own seeds (disjoint from training's)."""
    cfg = generator.unet.config
    shape = (num, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    gens = [torch.Generator(device=device).manual_seed(seed * 1000 + 7919 + i) for i in range(4)]
    z, z_other, z_coupled, z_base = (torch.randn(shape, generator=g, device=device) for g in gens)
    return EvalSet(z=z, cond=cond.extract(_batched(generator, z_other)), coupled_z=z_coupled,
                   base_samples=_batched(generator, z_base), test_images=test_images)


def _batched(fn: Callable[..., torch.Tensor], *args: torch.Tensor, size: int = 256) -> torch.Tensor:
    return torch.cat([fn(*parts) for parts in zip(*(a.split(size) for a in args), strict=True)])


@torch.no_grad()
def evaluate(model: Controlled | None, generator: OneStepGenerator, cond: ConditionModel, data: EvalSet,
             feature_net: torch.nn.Module) -> dict[str, float]:
    """Consistency, fidelity and boundary metrics; ``model=None`` scores the uncontrolled base (chance level)."""
    if model is None:
        samples = _batched(generator, data.z)
        coupled_err = 0.0
    else:
        samples = _batched(model, data.z, cond.as_map(data.cond))
        x = _batched(generator, data.coupled_z)
        coupled = _batched(model, data.coupled_z, cond.as_map(cond.extract(x)))
        coupled_err = float((coupled - x).pow(2).mean())
    err = cond.consistency_error(samples, data.cond)
    return {
        "consistency_error": float(err.mean()),
        "fd_vs_base": digits_frechet_distance(samples, data.base_samples, feature_net),
        "fd_vs_test": digits_frechet_distance(samples, data.test_images, feature_net),
        "coupled_boundary_mse": coupled_err,
        "edge_energy": float(sobel_edges(samples.clamp(-1, 1)).mean()),  # falls when outputs blur
        "pixel_std": float(samples.std(0).mean()),  # falls when outputs lose diversity
    }


@torch.no_grad()
def sample_grid(model: Controlled, cond: ConditionModel, data: EvalSet, count: int) -> torch.Tensor:
    """The first ``count`` independent-pair outputs (for the figure)."""
    return model(data.z[:count], cond.as_map(data.cond[:count]))
