"""Rectified flow in a latent space, with the paper's timestep shift (Sec. 4.2) and its off-manifold
analysis (Sec. 3.2).

Convention (the paper's): x_t = (1 - t) x0 + t eps, t in [0, 1] (t = 1 is noise), velocity target
v = eps - x0; sampling integrates dx/dt = v from t = 1 down to t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def shift_factor(channels: int, patch: int, base_channels: int = 16, base_patch: int = 1) -> float:
    """The shift rule s = sqrt(C P^2 / (C_base P_base^2)): Flux-VAE (16 ch, P=2) gives 2, DINOv2-B (768, P=1)
    gives 6.93, PS-VAE 96c (P=1) gives 2.45."""
    if min(channels, patch, base_channels, base_patch) < 1:
        raise ValueError("shift_factor needs positive channel counts and patch sizes")
    return math.sqrt(channels * patch**2 / (base_channels * base_patch**2))


def shift_time(t: torch.Tensor, s: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): s > 1 moves probability mass toward the noise end (t = 1)."""
    if s == 1.0:
        return t  # exact identity, so an unshifted run is bit-for-bit the plain schedule
    return s * t / (1.0 + (s - 1.0) * t)


def logit_normal_t(n: int, mean: float, std: float, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """t = sigmoid(mean + std * z), z ~ N(0, 1): the SD3 / RAE training-time density before the shift."""
    z = torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(mean + std * z)


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps with t broadcast over the non-batch dims."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """d x_t / d t = eps - x0."""
    return eps - x0


def sampling_times(steps: int, s: float) -> torch.Tensor:
    """The Euler grid from t = 1 to t = 0 (``steps`` + 1 points), shifted by ``shift_time``."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), s)


@torch.no_grad()
def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int, s: float = 1.0) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 (``noise``) to t = 0 with ``steps`` Euler steps."""
    times = sampling_times(steps, s)
    x = noise
    for t_cur, t_next in zip(times[:-1], times[1:], strict=True):
        t_batch = torch.full((x.shape[0],), float(t_cur), device=x.device, dtype=x.dtype)
        x = x + float(t_next - t_cur) * velocity(x, t_batch)
    return x


def off_manifold_velocity(v_z: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], q: torch.Tensor,
                          x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The optimal ambient velocity for data x = Q z (Q^T Q = I), paper Sec. 3.2:

    v_x(x_t) = Q v_z(Q^T x_t) + (1 / t) (I - Q Q^T) x_t.

    ``v_z(z_t, t)`` is the optimal velocity of the low-dimensional data; x_t is (N, h), Q is (h, l).
    The second term is the full-rank noise the ambient model must carry off the manifold.
    """
    z_t = x_t @ q
    inside = v_z(z_t, t) @ q.T
    outside = (x_t - z_t @ q.T) / t.reshape(-1, 1)
    return inside + outside
