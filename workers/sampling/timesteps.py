"""Sigma (= flow time t) grids for flow-matching samplers.

Convention: t = sigma in [0, 1], t = 1 is pure noise, t = 0 is data; a grid is strictly decreasing from
(usually) 1 to 0 and has ``num_steps + 1`` entries, so step i goes ``sigmas[i] -> sigmas[i + 1]``.

- SD3 / SANA / Sol-RL's SANA preset: :func:`flow_sigmas` with a static ``shift`` (1 = linear grid).
- FLUX.1 (dynamic, resolution-dependent shifting):
  ``time_shift_exponential(flux_mu(image_seq_len), flow_sigmas(num_steps))``. FLUX's pipeline starts from
  ``linspace(1, 1/N, N)`` and appends a terminal 0; since the shift maps 0 to 0 that is the same grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workers.sampling.errors import SamplingInputError


def flow_sigmas(num_steps: int, shift: float = 1.0) -> Tensor:
    """Linear flow-matching grid with SD3-style static shift.

    ``s = linspace(1, 0, num_steps + 1)`` then ``s' = shift * s / (1 + (shift - 1) * s)``, which keeps the
    endpoints (1 -> 1, 0 -> 0) and, for shift > 1, spends more steps at high noise (diffusers'
    FlowMatchEulerDiscreteScheduler uses the same map). Computed in float64, returned as float32.

    Args:
        num_steps: number of solver steps, >= 1.
        shift: the SD3 ``shift`` (> 0); 1.0 gives the plain linear grid used by Sol-RL's SANA preset.

    Returns:
        sigmas: [num_steps + 1] float32, strictly decreasing from 1 to 0.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise SamplingInputError(f"`num_steps` must be an int >= 1, got {num_steps!r}.")
    if (
        isinstance(shift, bool)
        or not isinstance(shift, int | float)
        or not math.isfinite(shift)
        or shift <= 0
    ):
        raise SamplingInputError(f"`shift` must be a finite number > 0 (1.0 means no shift), got {shift!r}.")
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    shifted = shift * s / (1.0 + (shift - 1.0) * s)
    return shifted.to(torch.float32)


def flux_mu(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """FLUX's resolution-dependent shift parameter ``mu``.

    Linear interpolation through (base_seq_len, base_shift) and (max_seq_len, max_shift), evaluated at the
    number of packed latent tokens (for FLUX: (H / 16) * (W / 16) for an H x W image). It extrapolates outside
    [base_seq_len, max_seq_len], as FLUX's pipeline does. The defaults are FLUX.1-dev's scheduler config.
    """
    if isinstance(image_seq_len, bool) or not isinstance(image_seq_len, int) or image_seq_len < 1:
        raise SamplingInputError(f"`image_seq_len` must be an int >= 1, got {image_seq_len!r}.")
    if max_seq_len == base_seq_len:
        raise SamplingInputError(
            f"`max_seq_len` and `base_seq_len` must differ to define a slope, both are {base_seq_len!r}."
        )
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


def time_shift_exponential(mu: float, sigmas: Tensor) -> Tensor:
    """FLUX's exponential time shift: ``s' = e^mu / (e^mu + (1/s - 1))``.

    This is diffusers' ``FlowMatchEulerDiscreteScheduler._time_shift_exponential`` with exponent 1.0 (the value
    the scheduler always passes). It maps 1 -> 1 and 0 -> 0 (handled explicitly, since 1/0 is inf), and is
    monotone, so a decreasing grid stays decreasing. Computed in float64, returned in ``sigmas.dtype``.

    Args:
        mu: shift strength, e.g. from :func:`flux_mu`; mu = 0 is the identity.
        sigmas: [N] values in [0, 1].

    Returns:
        [N] shifted sigmas, same dtype and device as ``sigmas``.
    """
    if not math.isfinite(mu):
        raise SamplingInputError(f"`mu` must be finite, got {mu!r}.")
    s = sigmas.to(torch.float64)
    if bool(torch.any((s < 0) | (s > 1) | torch.isnan(s))):
        raise SamplingInputError("`sigmas` must lie in [0, 1] (t = 1 noise, t = 0 data).")
    e_mu = math.exp(mu)
    # Guard s = 0: the formula's limit there is 0, but 1/0 would go through inf.
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    shifted = torch.where(s > 0, e_mu / (e_mu + (1.0 / safe_s - 1.0)), torch.zeros_like(s))
    return shifted.to(sigmas.dtype)
