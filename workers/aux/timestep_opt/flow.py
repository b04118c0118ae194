"""Optimised sigma grids for the project's flow-matching sampler (``workers.sampling.sample``).

The RL sampler integrates x_t = (1 - t) x_0 + t eps on a grid sigmas[0] = 1 > ... > sigmas[N] = 0
(:func:`workers.sampling.timesteps.flow_sigmas` convention). Its solvers fix the order pattern the
objective must assume:

- ``euler``: first order at every step;
- ``dpm2`` (multistep DPM-Solver++(2M) in x0 form): first order at step 0, again at step 1 (its
  previous node is t = 1 where lambda = -inf, which zeroes the 2M correction), second order after
  that, and first order at the final step to t = 0 (see ``workers.sampling.ode.dpm2_step``).

lambda = log((1 - t) / t) is infinite at both ends, so the optimiser works between t_max = 1 - clip and
t_min = clip (:class:`FlowSchedule`), and the returned grid puts the exact 1 and 0 back at the ends.
"""

from __future__ import annotations

from typing import Literal

import torch

from workers.aux.timestep_opt.objective import Weight
from workers.aux.timestep_opt.optimize import StepOptResult, optimize_time_steps
from workers.aux.timestep_opt.schedule import FlowSchedule

FlowSolver = Literal["euler", "dpm2"]


def sampler_order_pattern(num_steps: int, solver: FlowSolver) -> list[int]:
    """The per-step order that ``workers.sampling.sample`` runs on a grid from 1 to 0."""
    if solver == "euler":
        return [1] * num_steps
    if solver == "dpm2":
        return [1 if s in (0, 1, num_steps - 1) else 2 for s in range(num_steps)]
    raise ValueError(f"solver must be 'euler' or 'dpm2' (deterministic), got {solver!r}")


def optimize_flow_grid(num_steps: int, solver: FlowSolver = "dpm2", *, clip: float = 1e-3,
                       weight: Weight = "sigma2_over_alpha", trunc_num: int | None = 3,
                       max_iter: int = 1000) -> StepOptResult:
    """The optimiser's result on the clipped flow schedule, for the sampler's order pattern."""
    schedule = FlowSchedule(t_max=1.0 - clip, t_min=clip)
    return optimize_time_steps(schedule, num_steps, orders=sampler_order_pattern(num_steps, solver), init="unif",
                               weight=weight, trunc_num=trunc_num, max_iter=max_iter)


def optimized_flow_sigmas(num_steps: int, solver: FlowSolver = "dpm2", *, clip: float = 1e-3,
                          weight: Weight = "sigma2_over_alpha", trunc_num: int | None = 3) -> torch.Tensor:
    """An optimised drop-in for ``flow_sigmas(num_steps)``: [num_steps + 1] float32, strictly decreasing 1 -> 0.

    ``num_steps = 1`` has no interior point to move and returns [1, 0].
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if not 0.0 < clip < 0.5:
        raise ValueError(f"clip must be in (0, 0.5), got {clip}")
    if num_steps == 1:
        return torch.tensor([1.0, 0.0])
    t = optimize_flow_grid(num_steps, solver, clip=clip, weight=weight, trunc_num=trunc_num).t.copy()
    t[0], t[-1] = 1.0, 0.0
    sigmas = torch.as_tensor(t, dtype=torch.float64).to(torch.float32)
    if not bool(torch.all(sigmas[1:] < sigmas[:-1])):
        raise ValueError(f"the optimised grid is not strictly decreasing in float32: {sigmas.tolist()}")
    return sigmas
