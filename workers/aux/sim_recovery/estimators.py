"""SIM-DMIS (Algorithm 1) and its ablations, as functions of (A, y) and a diffusion prior.

- ``linear_estimate``: ``clip(C_s' A^T y / m)``, the classical SIM estimator (no prior);
- ``sim_dms``: ``G_{t*}(x_{t*})``, denoising from t* only;
- ``sim_dmfis``: ``G(G-dagger(x_0))``, inversion of the whole way from t = 0 up to T, then sampling;
- ``sim_dmis``: ``G(G-dagger_{t*}(x_{t*}))``, the method: invert t* -> T, then sample T -> 0.

All four see only ``A``, ``y`` and the scalars ``C_s``, ``C_s'``: neither the link nor ``||x*||``.
Shapes: ``A_BMN``, ``y_BM`` (one problem per row), outputs ``(B, C, H, W)`` in the prior's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from workers.aux.sim_recovery import ddim
from workers.aux.sim_recovery.measurements import back_projection
from workers.aux.sim_recovery.prior import DiffusionPrior
from workers.aux.sim_recovery.schedule import t_star

Arm = Literal["linear", "sim_dms", "sim_dmfis", "sim_dmis"]
ARMS: tuple[Arm, ...] = ("linear", "sim_dms", "sim_dmfis", "sim_dmis")


@dataclass(frozen=True)
class SimHyper:
    """The two constants of Algorithm 1 and the solver's step counts.

    c_s: sets t* by ``sigma_{t*} / alpha_{t*} = C_s / sqrt(m)`` (step 1).
    c_s_prime: scales the back-projection, ``x_{t*} = alpha_{t*} C_s' A^T y / m`` (step 2); one
        constant per dataset and link, never per image.
    inversion_steps / sampling_steps: DDIM steps of G-dagger (t* -> T) and G (T -> 0, or t* -> 0 for DMS).
    """

    c_s: float | torch.Tensor  # a scalar, or one value per problem (B,) to batch a grid search
    c_s_prime: float | torch.Tensor
    inversion_steps: int
    sampling_steps: int


def start_point(A_BMN: torch.Tensor, y_BM: torch.Tensor, hyper: SimHyper, prior: DiffusionPrior,
                use_t_star: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 steps 1-2: ``(x_{t*}, t*_B)``; with ``use_t_star=False`` the start is t = 0 (DMFIS).

    ``x_{t*} = alpha_{t*} C_s' A^T y / m`` with no noise added: the measurement noise of the
    back-projection plays the part of the forward process's noise.
    """
    batch, m = A_BMN.shape[:2]
    c_s_B = torch.as_tensor(hyper.c_s, dtype=torch.float64).expand(batch)
    t_B = t_star(prior.schedule, c_s_B, m) if use_t_star else torch.zeros(batch, dtype=torch.float64)
    alpha_B, _ = prior.schedule.alpha_sigma(t_B)
    scale_B = alpha_B * torch.as_tensor(hyper.c_s_prime, dtype=torch.float64).expand(batch)
    x_bar = back_projection(A_BMN, y_BM)
    x_BCHW = (scale_B.to(x_bar.dtype).unsqueeze(1) * x_bar).reshape(-1, *prior.sample_shape)
    return x_BCHW.to(prior.device), t_B


def linear_estimate(A_BMN: torch.Tensor, y_BM: torch.Tensor, c_s_prime: float | torch.Tensor,
                    shape: tuple[int, ...]) -> torch.Tensor:
    """``clip(C_s' A^T y / m, -1, 1)``, reshaped to images (``c_s_prime`` scalar or per problem)."""
    x_bar = back_projection(A_BMN, y_BM)
    scale_B = torch.as_tensor(c_s_prime, dtype=x_bar.dtype).expand(x_bar.shape[0]).unsqueeze(1)
    return (scale_B * x_bar).clamp(-1, 1).reshape(-1, *shape)


def sim_dms(A_BMN: torch.Tensor, y_BM: torch.Tensor, hyper: SimHyper, prior: DiffusionPrior) -> torch.Tensor:
    """SIM-DMS: ``G_{t*}(x_{t*})``, DDIM from t* to 0 (``sampling_steps`` evaluations)."""
    x, t_B = start_point(A_BMN, y_BM, hyper, prior)
    return ddim.sample(x, t_B, hyper.sampling_steps, prior, prior.schedule).clamp(-1, 1)


def sim_dmis(A_BMN: torch.Tensor, y_BM: torch.Tensor, hyper: SimHyper, prior: DiffusionPrior) -> torch.Tensor:
    """SIM-DMIS (Algorithm 1): invert t* -> T deterministically, then sample T -> 0."""
    x, t_B = start_point(A_BMN, y_BM, hyper, prior)
    return _invert_then_sample(x, t_B, hyper, prior)


def sim_dmfis(A_BMN: torch.Tensor, y_BM: torch.Tensor, hyper: SimHyper, prior: DiffusionPrior) -> torch.Tensor:
    """SIM-DMFIS: the same as SIM-DMIS but the inversion starts at t = 0 (C_s unused)."""
    x, t_B = start_point(A_BMN, y_BM, hyper, prior, use_t_star=False)
    return _invert_then_sample(x, t_B, hyper, prior)


def _invert_then_sample(x: torch.Tensor, t_B: torch.Tensor, hyper: SimHyper, prior: DiffusionPrior) -> torch.Tensor:
    x_T = ddim.invert(x, t_B, hyper.inversion_steps, prior, prior.schedule)
    t_T = torch.full_like(t_B, prior.schedule.t_max)
    return ddim.sample(x_T, t_T, hyper.sampling_steps, prior, prior.schedule).clamp(-1, 1)


def estimate(arm: Arm, A_BMN: torch.Tensor, y_BM: torch.Tensor, hyper: SimHyper,
             prior: DiffusionPrior) -> torch.Tensor:
    """Run one arm on a batch of problems; the result is on the prior's device."""
    if arm == "linear":
        return linear_estimate(A_BMN, y_BM, hyper.c_s_prime, prior.sample_shape).to(prior.device)
    fn = {"sim_dms": sim_dms, "sim_dmfis": sim_dmfis, "sim_dmis": sim_dmis}.get(arm)
    if fn is None:
        raise ValueError(f"arm must be one of {', '.join(ARMS)}, got {arm!r}")
    return fn(A_BMN, y_BM, hyper, prior)
