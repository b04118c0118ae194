"""The sampling loop: model-agnostic, pure, and regenerable from seeds.

Legend: B batch, T number of stochastic (SDE/CPS) steps, N = num_steps = len(sigmas) - 1, ``*`` the
per-sample latent dims; e.g. ``means_BT`` is [B, T, *latent].

:func:`sample` integrates the flow ODE/SDE over a sigma grid with one of four step rules, each a pure function
in its own module: ``"euler"`` and ``"dpm2"`` (:mod:`.ode`, deterministic; Sol-RL's SANA and FLUX/SD3
presets), ``"sde"`` (:mod:`.sde`, Flow-GRPO) and ``"cps"`` (:mod:`.cps`). The loop owns only what the step
rules must not: choosing the rule per step (the SDE window), threading dpm2's previous x0 prediction, and
drawing per-step noise from the candidates' seeds so a stochastic trajectory can be rebuilt bit-for-bit.

Precision rule: the latent is carried in ``x_init.dtype`` between steps (that is what the model sees and
what the trajectory stores); each update is computed in float32 (float64 for float64 latents) and cast back,
as diffusers' flow-match scheduler does. The model receives t in that same wide dtype, never bf16: bf16 has
8 mantissa bits, so t = 0.9 would reach the timestep embedding as 0.8984.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from workers.sampling._coeffs import check_fraction, compute_dtype
from workers.sampling.cps import cps_log_prob, cps_step
from workers.sampling.errors import SamplingInputError
from workers.sampling.noise import step_noise
from workers.sampling.ode import dpm2_step, euler_step, predict_x0
from workers.sampling.sde import gaussian_log_prob, sde_step

Solver = Literal["euler", "dpm2", "sde", "cps"]
VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""velocity_fn(x_t [B, *latent] in x_init.dtype, t_B [B] float32/float64) -> v [B, *latent]."""
ProgressFn = Callable[[int, int], None]
"""progress(step_index, num_steps), called after step ``step_index`` (0-based) has finished."""

_SOLVERS = ("euler", "dpm2", "sde", "cps")
_STOCHASTIC = ("sde", "cps")


@dataclass(frozen=True)
class SampleResult:
    """Output of :func:`sample`.

    Attributes:
        x0: [B, *latent] final latent (at sigmas[-1], normally 0), in ``x_init.dtype``.
        sigmas: [N + 1] the grid that was used (step i goes sigmas[i] -> sigmas[i + 1]).
        trajectory: N + 1 latents [B, *latent] (x_init first, x0 last) if ``keep_trajectory``, else None.
        stochastic_steps: the T step indices that were SDE/CPS steps (empty for ODE solvers).
        log_probs_BT: [B, T] per-step log-probs of the stored transitions (Gaussian, dim-averaged, for
            "sde"; constant-free for "cps"), float32; None for ODE solvers.
        means_BT: [B, T, *latent] transition means of the stochastic steps, float32; None for ODE solvers.
        stds_BT: [B, T] transition stds of the stochastic steps, float32; None for ODE solvers.
    """

    x0: Tensor
    sigmas: Tensor
    trajectory: list[Tensor] | None
    stochastic_steps: tuple[int, ...]
    log_probs_BT: Tensor | None
    means_BT: Tensor | None
    stds_BT: Tensor | None


def _check_sigmas(sigmas: Tensor) -> list[float]:
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise SamplingInputError(
            "`sigmas` must be a 1-D tensor with at least 2 entries (num_steps + 1), e.g. flow_sigmas(10)."
        )
    # One host copy; the step rules then get python floats, so the loop itself never syncs on time values.
    values = [float(s) for s in sigmas.detach().cpu().tolist()]
    if not all(0.0 <= s <= 1.0 for s in values) or any(
        a <= b for a, b in zip(values, values[1:], strict=False)
    ):
        raise SamplingInputError(f"`sigmas` must be strictly decreasing within [0, 1], got {values}.")
    return values


def _stochastic_steps(solver: str, num_steps: int, sde_window: range | None) -> tuple[int, ...]:
    if solver not in _STOCHASTIC:
        if sde_window is not None:
            raise SamplingInputError(
                f"`sde_window` only applies to solver 'sde' or 'cps', got solver={solver!r}; drop it."
            )
        return ()
    if sde_window is None:
        return tuple(range(num_steps))
    if not isinstance(sde_window, range) or len(sde_window) == 0:
        raise SamplingInputError(
            f"`sde_window` must be a non-empty range of step indices, got {sde_window!r}."
        )
    if min(sde_window) < 0 or max(sde_window) >= num_steps:
        raise SamplingInputError(
            f"`sde_window` {sde_window!r} must lie within the {num_steps} steps, i.e. inside range(0, {num_steps})."
        )
    return tuple(sorted(sde_window))


def _check_noise_args(solver: str, noise_level: float, seeds: Sequence[int] | None, batch: int) -> None:
    if solver not in _SOLVERS:
        raise SamplingInputError(f"`solver` must be one of {_SOLVERS}, got {solver!r}.")
    if solver in _STOCHASTIC:
        check_fraction(noise_level, "noise_level", upper=1.0 if solver == "cps" else None)
        if noise_level == 0:
            raise SamplingInputError(
                f"solver={solver!r} needs noise_level > 0 (a = 0.7 for 'sde', eta = 0.8 for 'cps' are the "
                f"anchors' defaults); for deterministic sampling use solver='euler'."
            )
        if seeds is None:
            raise SamplingInputError(
                f"solver={solver!r} draws per-step noise from the candidates' seeds; pass `seeds` (one per sample)."
            )
    elif noise_level != 0:
        raise SamplingInputError(
            f"solver={solver!r} is deterministic and ignores noise; set noise_level=0 (got {noise_level!r})."
        )
    if seeds is not None and len(seeds) != batch:
        raise SamplingInputError(f"`seeds` has {len(seeds)} entries but `x_init` has batch {batch}.")


def sample(
    velocity_fn: VelocityFn,
    x_init: Tensor,
    sigmas: Tensor,
    *,
    solver: Solver,
    seeds: Sequence[int] | None = None,
    noise_level: float = 0.0,
    sde_window: range | None = None,
    keep_trajectory: bool = False,
    progress: ProgressFn | None = None,
) -> SampleResult:
    """Integrate from ``x_init`` at sigmas[0] down the grid with one step rule.

    Args:
        velocity_fn: ``v = velocity_fn(x_t, t_B)``; x_t [B, *latent] in ``x_init.dtype``, t_B [B] in float32
            (float64 for float64 latents) on ``x_init.device``. Any CFG or conditioning lives inside it.
        x_init: [B, *latent] initial latent at sigmas[0] (e.g. :func:`~workers.sampling.noise.initial_noise`).
        sigmas: [N + 1] strictly decreasing grid in [0, 1] (e.g. :func:`~workers.sampling.timesteps.flow_sigmas`).
        solver: "euler" (flow Euler ODE), "dpm2" (multistep DPM-Solver++(2M), first order at the first step
            and at a final step to 0), "sde" (Flow-GRPO SDE) or "cps" (coefficients-preserving sampling).
        seeds: one candidate seed per sample (:func:`~workers.sampling.noise.candidate_seed`); required for
            "sde"/"cps", whose step i noise is ``step_noise(seeds, i, ...)``; accepted and unused otherwise.
        noise_level: a (> 0) for "sde", eta in (0, 1] for "cps"; must be 0 for "euler"/"dpm2".
        sde_window: for "sde"/"cps" only: the step indices that are stochastic, the others being Euler
            (Flow-GRPO-Fast / MixGRPO windows). None means every step is stochastic.
        keep_trajectory: store every intermediate latent (needed to re-evaluate log-probs for GRPO).
        progress: optional callback ``progress(step_index, num_steps)`` after each step.

    Returns:
        :class:`SampleResult`.
    """
    if x_init.ndim < 1 or x_init.shape[0] < 1:
        raise SamplingInputError(
            f"`x_init` must be [B, *latent] with B >= 1, got shape {tuple(x_init.shape)}."
        )
    batch = x_init.shape[0]
    _check_noise_args(solver, noise_level, seeds, batch)
    ts = _check_sigmas(sigmas)
    num_steps = len(ts) - 1
    stochastic = _stochastic_steps(solver, num_steps, sde_window)
    stochastic_set = set(stochastic)
    wide = compute_dtype(x_init.dtype)
    # flow_grpo's sigma_max: the grid's first interior sigma, used only where t == 1 (see sde.py).
    sigma_max = ts[1]

    x = x_init
    trajectory = [x] if keep_trajectory else None
    log_probs, means, stds = [], [], []
    x0_prev: Tensor | None = None
    t_prev: float | None = None
    for i in range(num_steps):
        t, t_next = ts[i], ts[i + 1]
        t_B = torch.full((batch,), t, dtype=wide, device=x.device)
        v = velocity_fn(x, t_B)
        if v.shape != x.shape:
            raise SamplingInputError(
                f"velocity_fn returned shape {tuple(v.shape)} for a latent of shape {tuple(x.shape)} at step {i}."
            )
        if i in stochastic_set:
            noise = step_noise(seeds, i, tuple(x.shape[1:]), dtype=wide, device=x.device)
            if solver == "sde":
                step = sde_step(x, v, t, t_next, noise_level, noise, sigma_max=sigma_max)
                log_probs.append(gaussian_log_prob(step.x_next, step.mean, step.std))
            else:
                step = cps_step(x, v, t, t_next, noise_level, noise)
                log_probs.append(cps_log_prob(step.x_next, step.mean))
            # Log-probs are of the stored (cast) x_next, so a trainer re-evaluating them sees the same sample.
            means.append(step.mean)
            stds.append(step.std.reshape(batch))
            x = step.x_next
        elif solver == "dpm2":
            x0_pred = predict_x0(x, v, t)
            x = dpm2_step(x, x0_pred, t, t_next, x0_prev=x0_prev, t_prev=t_prev)
            x0_prev, t_prev = x0_pred, t
        else:
            x = euler_step(x, v, t, t_next)
        if trajectory is not None:
            trajectory.append(x)
        if progress is not None:
            progress(i, num_steps)

    has_log_probs = solver in _STOCHASTIC
    return SampleResult(
        x0=x,
        sigmas=sigmas,
        trajectory=trajectory,
        stochastic_steps=stochastic,
        log_probs_BT=torch.stack(log_probs, dim=1) if has_log_probs else None,
        means_BT=torch.stack(means, dim=1) if has_log_probs else None,
        stds_BT=torch.stack(stds, dim=1) if has_log_probs else None,
    )
