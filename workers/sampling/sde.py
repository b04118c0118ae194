"""Flow-GRPO's ODE-to-SDE step and its per-step Gaussian log-probability (solrl_spec.md sections 2.1, 2.2).

Legend: B batch, ``*`` per-sample latent dims; ``x`` is [B, *latent]. Times are python floats (shared by the
batch) or [B] tensors. Reference: Liu et al. 2025, "Flow-GRPO", eq. 9, and flow_grpo's
``sde_step_with_logprob`` (``sde_type='sde'``).

With a = ``noise_level`` and dt = t_next - t < 0::

    sigma_t = a * sqrt(t / (1 - t))                      (t = 1 in the denominator replaced by sigma_max)
    mean    = x + [v + sigma_t^2 / (2 t) * (x + (1 - t) v)] * dt
    std     = sigma_t * sqrt(-dt)
    x_next  = mean + std * noise,   noise ~ N(0, I)

The SDE has the same marginals as the flow ODE; with a = 0 the step is exactly Euler. At t = 1 the
denominator 1 - t is zero, so flow_grpo replaces *only the t inside (1 - t)* by sigma_max, the first interior
sigma of the grid (``sigmas[1]``), giving sigma_t = a / sqrt(1 - sigma_max); we do the same so log-probs match.

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
from workers.sampling.errors import SamplingInputError

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class SdeStep:
    """Result of one stochastic step.

    Attributes:
        x_next: [B, *latent] the sampled next latent, in the input latent's dtype.
        mean: [B, *latent] the Gaussian transition mean, float32 (float64 for float64 inputs).
        std: [B, 1, ..., 1] the per-sample transition std (same for every latent dim), same dtype as mean.
    """

    x_next: Tensor
    mean: Tensor
    std: Tensor


def _includes_t_one(t: TimeLike) -> bool:
    """Whether any entry of ``t`` equals 1 (one host sync for tensors; free for floats)."""
    return bool(torch.any(t == 1)) if isinstance(t, Tensor) else t == 1


def sde_mean_std(
    x: Tensor,
    v: Tensor,
    t: TimeLike,
    t_next: TimeLike,
    noise_level: float,
    sigma_max: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean and std of the Flow-GRPO SDE transition p(x_next | x), without sampling.

    Use this to re-evaluate a stored transition under a new velocity (the trainer's log-prob and KL).

    Args:
        x: [B, *latent] latent at time t.
        v: [B, *latent] velocity predicted at (x, t).
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.
        noise_level: Flow-GRPO's a >= 0 (0.7 in Flow-GRPO's configs); 0 reduces the step to Euler.
        sigma_max: required when any t == 1: the first interior sigma of the grid, in [0, 1).

    Returns:
        mean: [B, *latent] and std: [B, 1, ..., 1], both in ``compute_dtype(x.dtype)``.
    """
    check_same_shape(x, v, "x", "v")
    check_step_times(t, t_next)
    check_fraction(noise_level, "noise_level", upper=None)
    dtype = compute_dtype(x.dtype)
    t_c = time_coeff(t, x, "t")
    dt = time_coeff(t_next, x, "t_next") - t_c
    if _includes_t_one(t):
        if sigma_max is None or not 0.0 <= sigma_max < 1.0:
            raise SamplingInputError(
                f"t == 1 needs `sigma_max` in [0, 1) (the grid's first interior sigma, sigmas[1]) to avoid "
                f"dividing by 1 - t = 0; got sigma_max={sigma_max!r}."
            )
        denom_t = torch.where(t_c == 1, torch.full_like(t_c, sigma_max), t_c)
    else:
        denom_t = t_c
    sigma_t = noise_level * torch.sqrt(t_c / (1.0 - denom_t))
    x_w, v_w = x.to(dtype), v.to(dtype)
    # Written as Euler's x + dt * v plus a drift correction so that a = 0 reproduces euler_step bit-for-bit.
    mean = x_w + (v_w + sigma_t**2 / (2.0 * t_c) * (x_w + (1.0 - t_c) * v_w)) * dt
    std = (sigma_t * torch.sqrt(-dt)).expand(x.shape[0], *([1] * (x.ndim - 1)))
    return mean, std


def sde_step(
    x: Tensor,
    v: Tensor,
    t: TimeLike,
    t_next: TimeLike,
    noise_level: float,
    noise: Tensor,
    sigma_max: float | None = None,
) -> SdeStep:
    """One Flow-GRPO SDE step: ``x_next = mean + std * noise`` (see the module docstring for mean and std).

    Args:
        x: [B, *latent] latent at time t.
        v: [B, *latent] velocity predicted at (x, t).
        t: current time (float or [B]), 0 < t <= 1.
        t_next: next time (float or [B]), 0 <= t_next < t.
        noise_level: Flow-GRPO's a >= 0; with 0 the result equals :func:`~workers.sampling.ode.euler_step`
            exactly (std = 0, so :func:`gaussian_log_prob` is undefined and raises).
        noise: [B, *latent] standard normal draw, e.g. from :func:`~workers.sampling.noise.step_noise`.
        sigma_max: required when any t == 1: the grid's first interior sigma (``sigmas[1]``).

    Returns:
        :class:`SdeStep` with x_next [B, *latent] (x.dtype), mean [B, *latent] and std [B, 1, ..., 1].
    """
    check_same_shape(x, noise, "x", "noise")
    mean, std = sde_mean_std(x, v, t, t_next, noise_level, sigma_max)
    x_next = (mean + std * noise.to(mean.dtype)).to(x.dtype)
    return SdeStep(x_next=x_next, mean=mean, std=std)


def gaussian_log_prob(x_next: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-step Gaussian log-density, averaged (not summed) over the latent dims.

    ``log p = mean_d [ -(x_next - mean)^2 / (2 std^2) - log std - log sqrt(2 pi) ]``. Averaging over dims is
    what DDPO, Flow-GRPO, MixGRPO and DiffusionNFT all do; it keeps per-step log-ratios small, which is why
    their PPO clip ranges are ~1e-4.

    Args:
        x_next: [B, *latent] the sample whose density is evaluated (pass the stored latent, in its dtype).
        mean: [B, *latent] transition mean.
        std: transition std broadcastable to [B, *latent] (typically [B, 1, ..., 1]); must be > 0.

    Returns:
        log_prob: [B] in float32 (float64 when any input is float64).

    Raises:
        SamplingInputError: if any std <= 0 (e.g. noise_level = 0, where the transition is deterministic and
        the density does not exist). This check costs one host sync.
    """
    check_same_shape(x_next, mean, "x_next", "mean")
    dtype = torch.promote_types(compute_dtype(x_next.dtype), compute_dtype(mean.dtype))
    std_w = std.to(dtype)
    if not bool(torch.all(std_w > 0)):
        raise SamplingInputError(
            "`std` must be > 0 for a Gaussian log-prob; a zero std means a deterministic step "
            "(noise_level = 0), which has no density. Use noise_level > 0 or an ODE solver without log-probs."
        )
    diff = x_next.to(dtype) - mean.to(dtype)
    log_density = -(diff**2) / (2.0 * std_w**2) - torch.log(std_w) - _LOG_SQRT_2PI
    return mean_over_latent(log_density.expand_as(diff))
