"""Coefficients-Preserving Sampling (CPS) step and its log-probability (solrl_spec.md section 2.6).

Legend: B batch, ``*`` per-sample latent dims; ``x`` is [B, *latent]. Times are python floats (shared by the
batch) or [B] tensors. Reference: Wang et al. 2025, "Coefficients-Preserving Sampling for Reinforcement
Learning with Flow Matching" (arXiv 2509.05952), as used by flow_grpo's ``sde_type='cps'``.

With eta = ``noise_level`` in [0, 1]::

    sigma_cps = t_next * sin(eta * pi / 2)
    x0_hat    = x - t v                  (data prediction)
    x1_hat    = x + (1 - t) v            (noise prediction)
    mean      = (1 - t_next) x0_hat + sqrt(t_next^2 - sigma_cps^2) x1_hat
    x_next    = mean + sigma_cps * noise

The coefficients of x0 and of the total noise stay (1 - t_next) and t_next, so x_next lies on the same
interpolation path as the training data (unlike the Flow-GRPO SDE, which inflates the noise). We evaluate
sqrt(t_next^2 - sigma_cps^2) as ``t_next * cos(eta * pi / 2)``: equal algebraically, with no cancellation and
never a negative square root. eta = 0 gives the deterministic DDIM-like flow step, which equals Euler.

Precision: arithmetic in float32 (float64 for float64 inputs); ``x_next`` is cast back to ``x.dtype`` while
``mean`` and ``std`` stay in the wide dtype (see ``_coeffs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workers.sampling._coeffs import (
    TimeLike,
    check_fraction,
    check_same_shape,
    check_step_times,
    compute_dtype,
    mean_over_latent,
    time_coeff,
)


@dataclass(frozen=True)
class CpsStep:
    """Result of one CPS step.

    Attributes:
        x_next: [B, *latent] the sampled next latent, in the input latent's dtype.
        mean: [B, *latent] the transition mean, float32 (float64 for float64 inputs).
        std: [B, 1, ..., 1] sigma_cps per sample (0 at t_next = 0), same dtype as mean.
    """

    x_next: Tensor
    mean: Tensor
    std: Tensor


def cps_mean_std(
    x: Tensor, v: Tensor, t: TimeLike, t_next: TimeLike, noise_level: float
) -> tuple[Tensor, Tensor]:
    """Mean and std (sigma_cps) of the CPS transition, without sampling.

    Args:
        x: [B, *latent] latent at time t.
        v: [B, *latent] velocity predicted at (x, t).
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.
        noise_level: eta in [0, 1] (flow_grpo uses 0.8); 0 is deterministic, 1 puts all of x_next's noise
            into fresh noise.

    Returns:
        mean: [B, *latent] and std: [B, 1, ..., 1], both in ``compute_dtype(x.dtype)``.
    """
    check_same_shape(x, v, "x", "v")
    check_step_times(t, t_next)
    check_fraction(noise_level, "noise_level", upper=1.0)
    dtype = compute_dtype(x.dtype)
    t_c = time_coeff(t, x, "t")
    t_next_c = time_coeff(t_next, x, "t_next")
    x_w, v_w = x.to(dtype), v.to(dtype)
    x0_hat = x_w - t_c * v_w
    x1_hat = x_w + (1.0 - t_c) * v_w
    angle = noise_level * math.pi / 2.0
    sigma_cps = t_next_c * math.sin(angle)
    mean = (1.0 - t_next_c) * x0_hat + (t_next_c * math.cos(angle)) * x1_hat
    std = sigma_cps.expand(x.shape[0], *([1] * (x.ndim - 1)))
    return mean, std


def cps_step(
    x: Tensor, v: Tensor, t: TimeLike, t_next: TimeLike, noise_level: float, noise: Tensor
) -> CpsStep:
    """One CPS step: ``x_next = mean + sigma_cps * noise`` (see the module docstring).

    Args:
        x: [B, *latent] latent at time t.
        v: [B, *latent] velocity predicted at (x, t).
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.
        noise_level: eta in [0, 1].
        noise: [B, *latent] standard normal draw, e.g. from :func:`~workers.sampling.noise.step_noise`.

    Returns:
        :class:`CpsStep` with x_next [B, *latent] (x.dtype), mean [B, *latent] and std [B, 1, ..., 1].
    """
    check_same_shape(x, noise, "x", "noise")
    mean, std = cps_mean_std(x, v, t, t_next, noise_level)
    x_next = (mean + std * noise.to(mean.dtype)).to(x.dtype)
    return CpsStep(x_next=x_next, mean=mean, std=std)


def cps_log_prob(x_next: Tensor, mean: Tensor) -> Tensor:
    """CPS log-probability with every constant dropped: ``-mean_d (x_next - mean)^2``.

    The Gaussian's normaliser and its 1/(2 sigma_cps^2) scale are dropped, as in flow_grpo's CPS path.
    sigma_cps depends only on the grid and eta, so it is the same for the old and new policy: the normaliser
    cancels in the importance ratio and the dropped scale only rescales each step's log-ratio by a constant.
    Unlike the Gaussian log-prob it stays defined (0) for deterministic steps (sigma_cps = 0).

    Args:
        x_next: [B, *latent] the stored next latent.
        mean: [B, *latent] transition mean.

    Returns:
        [B] in float32 (float64 when any input is float64).
    """
    check_same_shape(x_next, mean, "x_next", "mean")
    dtype = torch.promote_types(compute_dtype(x_next.dtype), compute_dtype(mean.dtype))
    return -mean_over_latent((x_next.to(dtype) - mean.to(dtype)) ** 2)
