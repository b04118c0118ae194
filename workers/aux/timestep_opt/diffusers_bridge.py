"""Plug a time grid into diffusers' multistep solvers for VP (DDPM-type) models.

- ``DPMSolverMultistepScheduler`` (DPM-Solver++(3M)): integer grids go through the public
  ``set_timesteps(timesteps=[...])``; ``final_sigmas_type="sigma_min"`` makes the last step end at
  index 0, which is the paper's epsilon = 1/N.
- ``UniPCMultistepScheduler`` (UniPC-3, bh2): it takes custom ``sigmas`` only for flow models, so we call
  ``set_timesteps(N)`` (which resets its multistep state) and then replace ``timesteps`` (N values) and
  ``sigmas`` (N + 1 values of sigma_t / alpha_t, the last one at t_min).

Both run the order pattern 1, 2, 3, ..., 3, 2, 1 of ``order_pattern(N, 3)`` when N < 15
(``solver_order=3, lower_order_final=True``), the pattern the optimiser assumes, and both make exactly
N model calls for N steps (UniPC's corrector reuses the next call's output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from workers.aux.common.runtime import progress
from workers.aux.timestep_opt.schedule import DiscreteVPSchedule

SolverKind = Literal["dpmsolver++", "unipc"]
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps = fn(x_t, model timestep)


def make_solver(kind: SolverKind, base_config: Any, order: int = 3):
    """A fresh multistep scheduler of ``kind`` with the training schedule of ``base_config`` (e.g. a DDPM's)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    # prediction_type comes from base_config (epsilon for our DDPM; v-prediction models work too).
    common = {"solver_order": order, "lower_order_final": True, "final_sigmas_type": "sigma_min",
              "thresholding": False}
    if kind == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++",
                                                       use_karras_sigmas=False, use_lu_lambdas=False, **common)
    if kind == "unipc":
        return UniPCMultistepScheduler.from_config(base_config, predict_x0=True, solver_type="bh2",
                                                   use_karras_sigmas=False, **common)
    raise ValueError(f"unknown solver {kind!r}; valid: dpmsolver++, unipc")


def integer_timesteps(t: np.ndarray, schedule: DiscreteVPSchedule) -> np.ndarray:
    """The N model timesteps of a grid t_0 > ... > t_N = t_min, rounded; fails if rounding merges steps.

    Merged steps would silently lower the NFE (a third-party integration hides this with np.unique).
    """
    model_t = np.rint(schedule.model_time(np.asarray(t[:-1]))).astype(np.int64)
    if np.any(np.diff(model_t) >= 0) or model_t[-1] <= 0 or model_t[0] > schedule.num_train_timesteps - 1:
        raise ValueError(f"rounding the grid to integer timesteps gives {model_t.tolist()}, which is not strictly "
                         f"decreasing within (0, {schedule.num_train_timesteps - 1}]; use fewer steps or "
                         "eval.round_timesteps=false (fractional timesteps)")
    return model_t


def set_grid(scheduler, t: np.ndarray, schedule: DiscreteVPSchedule, round_timesteps: bool = True,
             device: torch.device | str = "cpu") -> None:
    """Make ``scheduler`` run the grid ``t`` (N + 1 times, t_max ... t_min = 1/N) with N model calls."""
    t = np.asarray(t, dtype=np.float64)
    if abs(t[-1] - schedule.t_min) > 1e-9:
        raise ValueError(f"the grid must end at t_min = {schedule.t_min} (index 0), got {t[-1]}")
    n = len(t) - 1
    if round_timesteps:
        model_t = integer_timesteps(t, schedule)
        t_nodes = np.append((model_t + 1.0) / schedule.num_train_timesteps, schedule.t_min)
    else:
        model_t = schedule.model_time(t[:-1])
        t_nodes = t
    if round_timesteps and type(scheduler).__name__ == "DPMSolverMultistepScheduler":
        scheduler.set_timesteps(timesteps=model_t.tolist(), device=device)  # the documented custom-timesteps API
    else:
        scheduler.set_timesteps(n, device=device)  # resets the multistep state; then swap in our grid
        scheduler.timesteps = torch.as_tensor(model_t if round_timesteps else model_t.astype(np.float32),
                                              device=device)
        scheduler.sigmas = torch.as_tensor(np.exp(-schedule.lambda_of_t(t_nodes)), dtype=torch.float32)
        scheduler.num_inference_steps = n
    scheduler.set_begin_index(0)


@torch.no_grad()
def solve(scheduler, eps_fn: EpsFn, x_init: torch.Tensor, desc: str | None = None) -> torch.Tensor:
    """Run the scheduler's grid from ``x_init`` (the noise at t_max); one ``eps_fn`` call per step.

    ``desc`` shows a progress bar (for long reference solutions).
    """
    x = x_init
    for timestep in progress(scheduler.timesteps, desc or "", enabled=desc is not None):
        x = scheduler.step(eps_fn(x, timestep), timestep, x).prev_sample
    return x
