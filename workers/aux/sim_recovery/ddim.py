"""Deterministic DDIM: one step, inversion t* -> T and sampling T -> 0 (the paper's G and G-dagger).

With a data prediction ``x0_hat = x_theta(x_t, t)`` and ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``,
one DDIM step from t to s is ``x_s = alpha_s x0_hat + sigma_s eps_hat`` (paper Sec. 2, the first-order
solver of the probability-flow ODE). Sampling applies it with s < t; inversion (``G-dagger``,
Algorithm 1 step 3) applies the same map with s > t, evaluating the network at the current point.
No fresh noise is ever added, so ``invert`` and ``sample`` are deterministic.

Every function takes per-sample times (``_B``), so samples with different t* share a batch.
Shapes: ``x_BCHW`` images, ``t_B`` real-valued times, ``ts_KB`` a grid of K time points per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from workers.aux.sim_recovery.schedule import VpSchedule

# (x_BCHW, t_B) -> (x0_hat_BCHW, eps_hat_BCHW): the denoiser in data + noise form
Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def per_sample(v_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v_B.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def ddim_step(x0_hat: torch.Tensor, eps_hat: torch.Tensor, alpha_s_B: torch.Tensor,
              sigma_s_B: torch.Tensor) -> torch.Tensor:
    """``x_s = alpha_s x0_hat + sigma_s eps_hat`` (the DDIM update, eta = 0)."""
    return per_sample(alpha_s_B, x0_hat) * x0_hat + per_sample(sigma_s_B, eps_hat) * eps_hat


def time_grid(t_from_B: torch.Tensor, t_to_B: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps + 1`` equally spaced times from ``t_from`` to ``t_to`` per sample: ``(steps + 1, B)`` float64."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    frac_K = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).unsqueeze(1)
    t_from_B = t_from_B.to(torch.float64)
    return t_from_B + (t_to_B.to(torch.float64) - t_from_B) * frac_K


def transport(x_BCHW: torch.Tensor, ts_KB: torch.Tensor, denoiser: Denoiser, schedule: VpSchedule) -> torch.Tensor:
    """Follow the DDIM map along the time grid ``ts_KB`` (increasing: inversion, decreasing: sampling).

    ``K - 1`` network evaluations; the point returned is on the grid's last time.
    """
    x = x_BCHW
    for k in range(ts_KB.shape[0] - 1):
        x0_hat, eps_hat = denoiser(x, ts_KB[k])
        alpha_s, sigma_s = schedule.alpha_sigma(ts_KB[k + 1])
        x = ddim_step(x0_hat, eps_hat, alpha_s, sigma_s)
    return x


def invert(x_BCHW: torch.Tensor, t_from_B: torch.Tensor, steps: int, denoiser: Denoiser,
           schedule: VpSchedule) -> torch.Tensor:
    """``G-dagger_{t*}``: deterministic DDIM inversion from ``t_from`` (per sample) up to ``T - 1``."""
    t_to_B = torch.full_like(t_from_B, schedule.t_max, dtype=torch.float64)
    return transport(x_BCHW, time_grid(t_from_B, t_to_B, steps), denoiser, schedule)


def sample(x_BCHW: torch.Tensor, t_from_B: torch.Tensor, steps: int, denoiser: Denoiser,
           schedule: VpSchedule) -> torch.Tensor:
    """``G``: DDIM sampling from ``t_from`` down to t = 0, returning ``x0_hat`` there (``steps`` evaluations).

    ``steps - 1`` DDIM moves land on t = 0; the last evaluation's data prediction is the output,
    i.e. the final move is to ``alpha = 1, sigma = 0``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t_to_B = torch.zeros_like(t_from_B, dtype=torch.float64)
    ts_KB = time_grid(t_from_B, t_to_B, steps - 1) if steps > 1 else t_from_B.to(torch.float64).unsqueeze(0)
    x = transport(x_BCHW, ts_KB, denoiser, schedule)
    return denoiser(x, ts_KB[-1])[0]
