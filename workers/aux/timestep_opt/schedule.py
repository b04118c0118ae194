"""Noise schedules in the half-log-SNR variable lambda = log(alpha / sigma) (Xue et al. 2024, Sec. 3).

The step optimiser works on lambda, which increases along sampling. A schedule maps continuous time
t (t = t_max is noise, t = t_min is data side) to (alpha_t, sigma_t, lambda_t) and back:

- :class:`DiscreteVPSchedule`: a discrete-time DDPM (``alphas_cumprod`` of length N, trained on
  n = 0..N-1). As in DPM-Solver, step n is continuous time t_n = (n + 1) / N, so t in [1/N, 1], and
  log alpha_t is the piecewise-linear interpolation of 0.5 log(alphas_cumprod) between those nodes.
- :class:`FlowSchedule`: rectified flow / flow matching, x_t = (1 - t) x_0 + t eps, so alpha = 1 - t,
  sigma = t and lambda = log((1 - t) / t); t = sigma is the project's sampler convention.

Everything is float64 numpy: scipy's optimiser calls these thousands of times on a few dozen numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def alpha_sigma_from_lambda(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VP coefficients of a half-log-SNR: alpha = (1 + e^{-2 lambda})^{-1/2}, sigma = (1 + e^{2 lambda})^{-1/2}."""
    lam = np.asarray(lam, dtype=np.float64)
    return 1.0 / np.sqrt(1.0 + np.exp(-2.0 * lam)), 1.0 / np.sqrt(1.0 + np.exp(2.0 * lam))


@dataclass(frozen=True)
class DiscreteVPSchedule:
    """A discrete DDPM schedule seen in continuous time (DPM-Solver's ``NoiseScheduleVP('discrete')``)."""

    alphas_cumprod: np.ndarray  # (N,) float64, decreasing

    @classmethod
    def from_scheduler(cls, scheduler) -> DiscreteVPSchedule:
        """From any diffusers scheduler with ``alphas_cumprod`` (DDPM, DDIM, DPMSolver, UniPC)."""
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod; a VP (DDPM-type) scheduler is needed")
        return cls(np.asarray(scheduler.alphas_cumprod, dtype=np.float64))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def t_max(self) -> float:
        return 1.0

    @property
    def t_min(self) -> float:
        """The earliest time, index 0 (= 1/N, the paper's epsilon = 1e-3 for N = 1000)."""
        return 1.0 / self.num_train_timesteps

    def _nodes(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_train_timesteps
        return np.arange(1, n + 1, dtype=np.float64) / n, 0.5 * np.log(self.alphas_cumprod)

    def log_alpha(self, t: np.ndarray) -> np.ndarray:
        t_nodes, log_alpha = self._nodes()
        return np.interp(np.asarray(t, dtype=np.float64), t_nodes, log_alpha)

    def lambda_of_t(self, t: np.ndarray) -> np.ndarray:
        log_a = self.log_alpha(t)
        return log_a - 0.5 * np.log1p(-np.exp(2.0 * log_a))

    def t_of_lambda(self, lam: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`lambda_of_t` (log alpha is monotone in t, so invert by interpolation)."""
        log_a = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))
        t_nodes, log_alpha = self._nodes()
        return np.interp(log_a, log_alpha[::-1], t_nodes[::-1])

    def model_time(self, t: np.ndarray) -> np.ndarray:
        """The timestep the network was trained on: t = (n + 1) / N  <=>  n = t N - 1."""
        return np.asarray(t, dtype=np.float64) * self.num_train_timesteps - 1.0


@dataclass(frozen=True)
class FlowSchedule:
    """Flow matching with sigma = t; lambda is infinite at t in {0, 1}, so the optimiser sees a clipped range."""

    t_max: float = 1.0 - 1e-3
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.t_min < self.t_max < 1.0:
            raise ValueError(f"FlowSchedule needs 0 < t_min < t_max < 1, got t_min={self.t_min}, t_max={self.t_max}")

    def lambda_of_t(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return np.log1p(-t) - np.log(t)

    def t_of_lambda(self, lam: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(np.asarray(lam, dtype=np.float64)))

    def model_time(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(t, dtype=np.float64)


Schedule = DiscreteVPSchedule | FlowSchedule
