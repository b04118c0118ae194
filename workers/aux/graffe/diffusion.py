"""The forward process, the denoising score-matching loss and the Diff-InfoMax bound.

Paper: Graffe (Chen et al., arXiv 2505.04956). The forward process is ``x_t = alpha_t X + sigma_t eps``
with ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` taken from a diffusers
``DDPMScheduler`` (so the schedule is the library's). Shapes: N nodes, F features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VpSchedule:
    """``abar_t`` of a discrete VP schedule, t in [0, T)."""

    alphas_cumprod: torch.Tensor  # (T,) float32

    @classmethod
    def from_diffusers(cls, num_train_timesteps: int, beta_schedule: str) -> VpSchedule:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        return cls(sched.alphas_cumprod.float().clone())

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.alphas_cumprod[t.cpu()].to(t.device)
        return abar.sqrt(), (1.0 - abar).sqrt()

    def add_noise(self, x0_NF: torch.Tensor, t_N: torch.Tensor, eps_NF: torch.Tensor) -> torch.Tensor:
        """``x_t = alpha_t x0 + sigma_t eps`` with a per-node timestep (a graph's nodes share one)."""
        alpha_N, sigma_N = self.alpha_sigma(t_N)
        return alpha_N.unsqueeze(1) * x0_NF + sigma_N.unsqueeze(1) * eps_NF


def dsm_loss(eps_hat_NF: torch.Tensor, eps_NF: torch.Tensor) -> torch.Tensor:
    """``|| D_theta(x_t, A, t, z) - eps ||^2`` averaged over nodes and features (lambda(t) = 1).

    The objective ``L = E_{t,eps} lambda(t) || D - target ||^2`` with the eps target; the per-element
    mean makes numbers comparable across feature widths.
    """
    return (eps_hat_NF - eps_NF).pow(2).mean()


def x0_mse_from_eps_mse(eps_mse: float, alpha: float, sigma: float) -> float:
    """x0-error of the implied ``x0_hat = (x_t - sigma eps_hat) / alpha``: ``(sigma/alpha)^2 * eps-error``."""
    return (sigma / alpha) ** 2 * eps_mse


def mi_bound_gap(mse_uncond: float, mse_cond: float, dim: int) -> float:
    """``(d/2) log(MSE_t(none) / MSE_t(z))``: the Diff-InfoMax estimate of I(x0; z | x_t) at one t, in nats.

    From ``I(x0; z | x_t) = h(x0|x_t) - h(x0|x_t,z) >= h(x0|x_t) - (d/2) log(2 pi e MSE_t(z)/d)``, with
    ``h(x0|x_t)`` estimated by the unconditional denoiser's Gaussian bound ``(d/2) log(2 pi e MSE_t(none)/d)``.
    Positive means the conditional denoiser is better, i.e. z carries information about x0 beyond x_t.
    The ratio is the same for eps- and x0-errors at matched t. ``dim`` is d (all denoised scalars).
    """
    return 0.5 * dim * math.log(mse_uncond / mse_cond)
