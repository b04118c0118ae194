"""The VP noise schedule in continuous time and the paper's choice of the start time t*.

A DDPM's scheduler gives ``alphas_cumprod`` on integer steps ``0..T-1``. SIM-DMIS needs the time
t* at which ``sigma_t / alpha_t = C_s / sqrt(m)`` (Algorithm 1, step 1), which in general falls
between two integer steps; we interpolate ``log alpha_bar`` linearly in t, so t* is exact (not
rounded to a step) and the denoiser is queried at a real-valued t (its sinusoidal time embedding
accepts any float).

Notation (VP, paper Sec. 2): ``x_t = alpha_t x_0 + sigma_t eps`` with ``alpha_t = sqrt(abar_t)``,
``sigma_t = sqrt(1 - abar_t)``. Tensor suffixes: ``_B`` per sample.
"""

from __future__ import annotations

import math

import torch


class VpSchedule:
    """``abar(t)`` on ``t in [0, T-1]``, piecewise log-linear between the scheduler's integer steps."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D tensor of values in (0, 1) with at least 2 steps")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing in t")
        self.log_abar = abar.log()  # (T,) float64
        self.t_max = float(len(abar) - 1)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at real-valued times ``t`` (float64, same shape)."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, self.t_max)
        lo = t.floor().long().clamp(max=int(self.t_max) - 1)
        frac = t - lo.to(torch.float64)
        return (self.log_abar[lo] * (1 - frac) + self.log_abar[lo + 1] * frac).exp()

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.abar(t)
        return abar.sqrt(), (1 - abar).sqrt()

    def time_of_abar(self, abar_target: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`abar` (exact on the piecewise log-linear curve); clamped to [0, T-1]."""
        target = torch.as_tensor(abar_target, dtype=torch.float64).log()
        target = target.clamp(self.log_abar[-1], self.log_abar[0])
        # log_abar is decreasing: count the grid points still above the target to find the segment
        neg = -self.log_abar
        hi = torch.searchsorted(neg, -target).clamp(1, len(neg) - 1)
        lo = hi - 1
        frac = (self.log_abar[lo] - target) / (self.log_abar[lo] - self.log_abar[hi])
        return lo.to(torch.float64) + frac


def t_star(schedule: VpSchedule, c_s: float | torch.Tensor, m: int) -> torch.Tensor:
    """Algorithm 1 step 1: the t with ``sigma_t / alpha_t = C_s / sqrt(m)``, i.e. ``abar = 1 / (1 + C_s^2 / m)``.

    Lemma 2 makes ``A^T y / m`` a ``1/sqrt(m)``-noisy copy of ``mu x*``, so fewer measurements mean
    more noise and a later t*. ``c_s`` may be a scalar or one value per sample; the result has its
    shape (float64). Raises when the target is beyond the schedule's last step, since the start
    point would then not match the forward process.
    """
    c_s = torch.as_tensor(c_s, dtype=torch.float64)
    if bool((c_s <= 0).any()) or m < 1:
        raise ValueError(f"C_s must be > 0 and m >= 1, got C_s={c_s.tolist()}, m={m}")
    abar_target = 1.0 / (1.0 + c_s**2 / m)
    lowest = math.exp(float(schedule.log_abar[-1]))
    if bool((abar_target < lowest).any()):
        raise ValueError(f"C_s / sqrt(m) = {(c_s.max() / math.sqrt(m)).item():.3g} asks for alpha_bar "
                         f"{abar_target.min().item():.3g}, below the schedule's last value {lowest:.3g}; "
                         "lower C_s or raise m")
    return schedule.time_of_abar(abar_target)
