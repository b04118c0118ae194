"""Independent float64 references shared by the sampling tests (plain formulas, no calls into the code).

Two analytic flow-matching problems (x_t = (1 - t) x0 + t eps, v = eps - x0):

- Point mass at ``x0``: the exact velocity is v(x, t) = (x - x0) / t, every x0 prediction x - t v equals x0,
  and the ODE path from x_1 is x_t = (1 - t) x0 + t x_1.
- Gaussian data x0 ~ N(mu, s^2) per dimension: x_t ~ N((1 - t) mu, sigma_t^2), sigma_t^2 = (1-t)^2 s^2 + t^2.
  The probability-flow ODE maps quantiles, x_t = (1 - t) mu + sigma_t z with z = x_1, so
  v = dx_t/dt = -mu + (sigma_t' / sigma_t)(x - (1 - t) mu) with sigma_t sigma_t' = t - (1 - t) s^2,
  and the exact endpoint is x_0 = mu + s x_1.
"""

from __future__ import annotations

import numpy as np
import torch


def point_mass_velocity(x0: torch.Tensor):
    def velocity(x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        t = t_B.reshape(-1, *([1] * (x.ndim - 1))).to(torch.float64)
        return ((x.to(torch.float64) - x0) / t).to(x.dtype)

    return velocity


def gaussian_velocity(mu: float, s: float):
    def velocity(x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        t = t_B.reshape(-1, *([1] * (x.ndim - 1))).to(torch.float64)
        var_t = (1 - t) ** 2 * s**2 + t**2
        v = -mu + (t - (1 - t) * s**2) / var_t * (x.to(torch.float64) - (1 - t) * mu)
        return v.to(x.dtype)

    return velocity


def gaussian_endpoint(mu: float, s: float, x1: torch.Tensor) -> torch.Tensor:
    return mu + s * x1.to(torch.float64)


def reference_dpm_solver_pp_2m(velocity, x1: np.ndarray, ts: np.ndarray) -> list[np.ndarray]:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) written in lambda space with alpha_t = 1 - t, sigma_t = t.

    x_next = (sigma_next / sigma) x - alpha_next * expm1(-h) * D, h = lambda_next - lambda,
    D = x0 on the first step and on a final step to t = 0 (lower_order_final), otherwise
    D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev with r = h_prev / h. Returns the trajectory (x1 first).
    """
    with np.errstate(divide="ignore"):

        def lam(t: float) -> float:
            return float(np.log(1.0 - t) - np.log(t))

        x = x1.astype(np.float64)
        out = [x]
        x0_prev, t_prev = None, None
        for t, t_next in zip(ts[:-1], ts[1:], strict=True):
            t, t_next = float(t), float(t_next)
            v = velocity(torch.from_numpy(x), torch.full((x.shape[0],), t, dtype=torch.float64)).numpy()
            x0 = x - t * v
            h = lam(t_next) - lam(t)
            if x0_prev is None or t_next == 0.0:
                d = x0
            else:
                r = (lam(t) - lam(t_prev)) / h
                d = (1.0 + 1.0 / (2.0 * r)) * x0 - 1.0 / (2.0 * r) * x0_prev
            x = (t_next / t) * x - (1.0 - t_next) * np.expm1(-h) * d
            out.append(x)
            x0_prev, t_prev = x0, t
        return out
