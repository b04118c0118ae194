"""Deterministic (ODE) step rules for flow matching: Euler and multistep DPM-Solver++(2M) ("dpm2").

Legend: B batch, ``*`` per-sample latent dims; ``x`` is [B, *latent]. Times ``t``/``t_next`` are python
floats (shared by the batch) or [B] tensors (per sample). Conventions: x_t = (1 - t) x0 + t eps,
v = eps - x0, x0_hat = x_t - t v, and a step goes t -> t_next < t (dt = t_next - t < 0).

Precision: arithmetic in float32 (float64 for float64 inputs), next latent cast back to ``x.dtype``
(see ``_coeffs``).

DPM-Solver++ for flow matching. With alpha_t = 1 - t, sigma_t = t and lambda_t = log(alpha_t / sigma_t),
the exact solution of the probability-flow ODE in data (x0) parameterisation is
``x_s = (sigma_s / sigma_t) x_t + sigma_s * integral_{lambda_t}^{lambda_s} e^{lambda} x0(lambda) dlambda``
(Lu et al. 2022, "DPM-Solver++", eq. for the data-prediction model). Freezing x0 over the step gives the
first-order update ``x_s = (sigma_s/sigma_t) x_t - alpha_s (e^{-h} - 1) D``, h = lambda_s - lambda_t.
For flow matching ``alpha_s (e^{-h} - 1) = (t_next - t) / t``, so the update is simply
``x_next = (t_next / t) x + (1 - t_next / t) D``: the DDIM-like flow step, and with D = x - t v exactly Euler.
This ratio form is what we evaluate: it is finite at t = 1 (alpha = 0, lambda = -inf) and returns D exactly
at t_next = 0 (lambda = +inf), so neither endpoint needs a special case. The second-order multistep variant
(2M) replaces D by ``(1 + 1/(2r)) x0_pred - 1/(2r) x0_prev`` with r = h_prev / h.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workers.sampling._coeffs import (
    TimeLike,
    check_same_shape,
    check_step_times,
    compute_dtype,
    time_coeff,
)
from workers.sampling.errors import SamplingInputError


def predict_x0(x: Tensor, v: Tensor, t: TimeLike) -> Tensor:
    """Data prediction from a velocity: ``x0_hat = x - t v``.

    Args:
        x: [B, *latent] current latent x_t.
        v: [B, *latent] predicted velocity at (x_t, t).
        t: current time, float or [B].

    Returns:
        [B, *latent] in ``compute_dtype(x.dtype)`` (kept in the wider dtype because dpm2 reuses it next step).
    """
    check_same_shape(x, v, "x", "v")
    dtype = compute_dtype(x.dtype)
    return x.to(dtype) - time_coeff(t, x, "t") * v.to(dtype)


def euler_step(x: Tensor, v: Tensor, t: TimeLike, t_next: TimeLike) -> Tensor:
    """One Euler step of the flow ODE: ``x_next = x + (t_next - t) v``.

    Args:
        x: [B, *latent] latent at time t.
        v: [B, *latent] velocity predicted at (x, t).
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.

    Returns:
        x_next: [B, *latent] in ``x.dtype``.
    """
    check_same_shape(x, v, "x", "v")
    check_step_times(t, t_next)
    dtype = compute_dtype(x.dtype)
    dt = time_coeff(t_next, x, "t_next") - time_coeff(t, x, "t")
    return (x.to(dtype) + dt * v.to(dtype)).to(x.dtype)


def _log_snr(t: Tensor) -> Tensor:
    """lambda_t = log((1 - t) / t): -inf at t = 1, +inf at t = 0 (both used as limits, never multiplied)."""
    return torch.log1p(-t) - torch.log(t)


def dpm2_step(
    x: Tensor,
    x0_pred: Tensor,
    t: TimeLike,
    t_next: TimeLike,
    x0_prev: Tensor | None = None,
    t_prev: TimeLike | None = None,
) -> Tensor:
    """One step of deterministic multistep DPM-Solver++(2M) in x0 (data) parameterisation.

    This is the solver Sol-RL's FLUX.1 and SD3.5-L presets (and DiffusionNFT) call ``"dpm2"``: a deterministic
    multistep DPM-Solver-2 in x0 parameterisation for flow matching (alpha_t = 1 - t, sigma_t = t).

    - First order when no previous prediction is given (the first step): ``D = x0_pred``.
    - First order at a final step to ``t_next = 0``: the 2M correction needs h = lambda_next - lambda = +inf
      there, so, like diffusers' ``lower_order_final`` (always applied with a zero final sigma), the last step
      drops to first order, which returns ``x0_pred`` exactly.
    - First order when ``t_prev == 1``: h_prev = +inf, so the correction 1/(2r) = h / (2 h_prev) is exactly 0.
    - Otherwise second order: ``D = (1 + 1/(2r)) x0_pred - 1/(2r) x0_prev``, r = h_prev / h,
      h_prev = lambda_t - lambda_{t_prev}.

    The update is ``x_next = (t_next / t) x + (1 - t_next / t) D`` (derivation in the module docstring).

    Args:
        x: [B, *latent] latent at time t.
        x0_pred: [B, *latent] data prediction at (x, t), e.g. :func:`predict_x0`.
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.
        x0_prev: [B, *latent] data prediction of the previous step, or None on the first step.
        t_prev: time of the previous step (float or [B], t < t_prev <= 1); given iff ``x0_prev`` is.

    Returns:
        x_next: [B, *latent] in ``x.dtype``.
    """
    check_same_shape(x, x0_pred, "x", "x0_pred")
    check_step_times(t, t_next)
    if (x0_prev is None) != (t_prev is None):
        raise SamplingInputError(
            "`x0_prev` and `t_prev` go together: pass both for a second-order step or neither for first order."
        )
    dtype = compute_dtype(x.dtype)
    t_c = time_coeff(t, x, "t")
    t_next_c = time_coeff(t_next, x, "t_next")
    d = x0_pred.to(dtype)
    if x0_prev is not None:
        check_same_shape(x, x0_prev, "x", "x0_prev")
        check_step_times(t_prev, t, names=("t_prev", "t"))
        t_prev_c = time_coeff(t_prev, x, "t_prev")
        lam = _log_snr(t_c)
        h = _log_snr(t_next_c) - lam
        h_prev = lam - _log_snr(t_prev_c)
        # 1/(2r) = h / (2 h_prev). Force it to 0 (first order) where t_next = 0 (h = inf, lower-order final)
        # and where t_prev = 1 (h_prev = inf; the limit is 0 anyway, but inf/inf must not reach the output).
        second_order = (t_next_c > 0) & (t_prev_c < 1)
        half_inv_r = torch.where(second_order, h / (2.0 * h_prev), torch.zeros_like(h))
        d = d + half_inv_r * (d - x0_prev.to(dtype))
    ratio = t_next_c / t_c
    return (ratio * x.to(dtype) + (1.0 - ratio) * d).to(x.dtype)
