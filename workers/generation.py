"""A versioned copy of the sampling policy in one precision, and the batched sampling it runs.

Both compute roles that sample are this class with different settings: the low-precision rollout
worker (stage 1, ``workers/rollout.py``) and the BF16 regeneration worker (stage 2,
``workers/regen.py``). A copy holds a plain (LoRA-free) transformer in the model dtype, swaps its
eligible layers to the requested precision once, and after every policy update merges the
policy's LoRA deltas (or full weights) into it and re-derives the quantized weights.

Legend: B candidates, T stochastic steps, C/H/W latent dims.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from workers.models.base import Conditioning, ModelAdapter
from workers.models.lora import merged_weights
from workers.precision import apply_precision, load_weights
from workers.sampling import flow_sigmas, initial_noise, sample


def shared_base_weights(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """``transformer``'s linear weights as detached views (no copy), which LoRA deltas merge into
    (W = W_base + s * B @ A). The adapter's transformer is the frozen base: the learner and every sampling copy
    work on deep copies of it and nothing writes to it (a test checks this through a training step and a sync),
    so every copy merges into the same tensors and no second set of weights is held (a FLUX-size model has
    24 GB of them)."""
    return {name: m.weight.detach() for name, m in transformer.named_modules() if isinstance(m, nn.Linear)}


class StalePolicyError(RuntimeError):
    """A request asked for a policy version this copy does not hold."""


@dataclass(frozen=True)
class PolicyWeights:
    """What travels from the learner to every sampling copy after an update.

    Exactly one of ``lora`` (per-layer ``{"A", "B", "scaling"}`` of the sampling adapter) or
    ``full`` (a complete transformer state dict) is set.
    """

    version: int
    lora: dict[str, dict[str, torch.Tensor | float]] | None = None
    full: dict[str, torch.Tensor] | None = None

    def num_bytes(self) -> int:
        tensors: list[torch.Tensor] = []
        if self.lora:
            tensors = [t for d in self.lora.values() for t in d.values() if isinstance(t, torch.Tensor)]
        if self.full:
            tensors = list(self.full.values())
        return sum(t.numel() * t.element_size() for t in tensors)


@functools.lru_cache(maxsize=32)
def _optimized_sigmas(num_steps: int, solver: str) -> torch.Tensor:
    from workers.aux.timestep_opt.flow import optimized_flow_sigmas

    return optimized_flow_sigmas(num_steps, solver)  # type: ignore[arg-type]


def sampling_sigmas(settings: SamplingSettings) -> torch.Tensor:
    """The sigma grid a stage samples on: the shifted uniform grid, or the optimized time steps (cached)."""
    if settings.grid == "shift":
        return flow_sigmas(settings.num_steps, settings.shift)
    if settings.grid == "optimized":
        if settings.solver not in ("euler", "dpm2") or settings.shift != 1.0:
            raise ValueError(f"grid 'optimized' needs solver euler or dpm2 and shift 1.0, got {settings.solver!r}, "
                             f"shift {settings.shift}")
        return _optimized_sigmas(settings.num_steps, settings.solver).clone()
    raise ValueError(f"unknown sigma grid {settings.grid!r}: shift or optimized")


@dataclass
class SamplingSettings:
    """How one stage samples: the ODE/SDE rule and the sigma grid."""

    num_steps: int
    solver: str = "dpm2"  # euler | dpm2 | sde | cps
    shift: float = 1.0
    grid: str = "shift"  # shift | optimized (aux.timestep_opt's grid for the solver's order pattern)
    noise_level: float = 0.0  # sde/cps only
    sde_window: range | None = None
    keep_trajectory: bool = False


@dataclass
class Generation:
    """Samples for B candidates, on CPU. ``log_probs_BT`` etc. only for SDE sampling."""

    seeds: list[int]
    version: int
    latents_BCHW: torch.Tensor
    images_B3HW: torch.Tensor
    sigmas: torch.Tensor
    seconds: float
    trajectory_BSCHW: torch.Tensor | None = None
    log_probs_BT: torch.Tensor | None = None
    stochastic_steps: list[int] = field(default_factory=list)


class PolicyCopy:
    """One precision's copy of the sampling policy (see module docstring)."""

    def __init__(
        self,
        adapter: ModelAdapter,
        precision: str,
        *,
        batch_size: int,
        min_dim: int | None = None,
    ) -> None:
        self.adapter = adapter
        self.precision = precision
        self.batch_size = batch_size
        self.transformer: nn.Module = copy.deepcopy(adapter.transformer).requires_grad_(False).eval()
        # Base weights of every linear to merge LoRA deltas into: the adapter's own, shared by all its copies.
        self._base_weights = shared_base_weights(adapter.transformer)
        self.report = apply_precision(self.transformer, precision, adapter.family, min_dim=min_dim)
        self.version = 0
        self.last_refresh_seconds = 0.0

    # ---- weights --------------------------------------------------------------------------
    def set_policy(self, weights: PolicyWeights) -> float:
        """Load a new policy version; returns the seconds it took (merge + re-quantization)."""
        start = time.perf_counter()
        if weights.full is not None:
            state = weights.full
        elif weights.lora is not None:
            merged = merged_weights(self._base_weights, weights.lora)
            # Untouched layers keep their (base) weights; the whole dict loads strictly.
            state = dict(self.transformer.state_dict())
            state.update({f"{name}.weight": w for name, w in merged.items()})
        else:
            raise ValueError("PolicyWeights carries neither lora nor full weights")
        load_weights(self.transformer, state)
        self.version = weights.version
        self.last_refresh_seconds = time.perf_counter() - start
        return self.last_refresh_seconds

    def check_version(self, version: int) -> None:
        if version != self.version:
            raise StalePolicyError(
                f"{self.precision} copy holds policy version {self.version}, request wants {version}; "
                "sync weights before sampling"
            )

    # ---- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        cond: Conditioning,
        seeds: Sequence[int],
        settings: SamplingSettings,
        *,
        version: int,
        decode: bool = True,
        progress: Callable[[int], None] | None = None,
        batch_size: int | None = None,
    ) -> Generation:
        """Sample one candidate per (cond row, seed). Each candidate depends only on its seed (and on the forward
        batch size, ``batch_size`` or the copy's own: one copy can serve two batch sizes without a second
        set of weights)."""
        self.check_version(version)
        if len(cond) != len(seeds):
            raise ValueError(f"got {len(cond)} conditioning rows for {len(seeds)} seeds")
        start = time.perf_counter()
        sigmas = sampling_sigmas(settings)
        parts: list[dict[str, torch.Tensor | None]] = []
        stochastic: list[int] = []
        batch = batch_size or self.batch_size
        for lo in range(0, len(seeds), batch):
            rows = list(range(lo, min(lo + batch, len(seeds))))
            # Pad every forward batch to exactly batch_size rows (repeating the last candidate):
            # GEMM kernels pick their blocking by the row count, so a fixed shape is what makes a
            # candidate's bits independent of which and how many candidates share its batch.
            padded = rows + [rows[-1]] * (batch - len(rows))
            part, stochastic = self._generate_batch(cond.index(padded), [seeds[i] for i in padded],
                                                    sigmas, settings, decode)
            parts.append({k: None if v is None else v[: len(rows)] for k, v in part.items()})
            if progress is not None:
                progress(len(rows))

        def cat(key: str) -> torch.Tensor | None:
            values = [p[key] for p in parts]
            return None if values[0] is None else torch.cat(values)  # type: ignore[arg-type]

        return Generation(
            seeds=list(seeds),
            version=self.version,
            latents_BCHW=cat("latents"),  # type: ignore[arg-type]
            images_B3HW=cat("images"),  # type: ignore[arg-type]
            sigmas=sigmas,
            seconds=time.perf_counter() - start,
            trajectory_BSCHW=cat("trajectory"),
            log_probs_BT=cat("log_probs"),
            stochastic_steps=stochastic,
        )

    def _generate_batch(
        self,
        cond: Conditioning,
        seeds: list[int],
        sigmas: torch.Tensor,
        settings: SamplingSettings,
        decode: bool,
    ) -> tuple[dict[str, torch.Tensor | None], list[int]]:
        adapter = self.adapter
        device, model_dtype = adapter.device, adapter.dtype
        x_init = initial_noise(seeds, adapter.latent_shape(), dtype=torch.float32, device=device)
        cond_dev = cond.to(device)

        def velocity(x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
            v = adapter.velocity(x.to(model_dtype), t_B.to(device), cond_dev, transformer=self.transformer)
            return v.float()

        result = sample(
            velocity,
            x_init,
            sigmas.to(device),
            solver=settings.solver,  # type: ignore[arg-type]
            seeds=seeds,
            noise_level=settings.noise_level,
            sde_window=settings.sde_window,
            keep_trajectory=settings.keep_trajectory,
        )
        images = adapter.decode(result.x0).cpu() if decode else None
        trajectory = torch.stack(result.trajectory, dim=1).cpu() if result.trajectory is not None else None
        log_probs = result.log_probs_BT.cpu() if result.log_probs_BT is not None else None
        part = {"latents": result.x0.cpu(), "images": images, "trajectory": trajectory, "log_probs": log_probs}
        return part, list(result.stochastic_steps)
