"""Grid comparison at equal NFE: every grid runs the same solver from the same x_T, and is scored by the
distance of its x_0 to a many-step reference solution of the same ODE from the same x_T (the brief's
primary metric: it is what the objective bounds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.aux.common.runtime import progress
from workers.aux.timestep_opt.diffusers_bridge import EpsFn, make_solver, set_grid, solve
from workers.aux.timestep_opt.flow import FlowSolver, optimize_flow_grid, sampler_order_pattern
from workers.aux.timestep_opt.grids import baseline_lambdas
from workers.aux.timestep_opt.objective import Weight, order_pattern, step_objective
from workers.aux.timestep_opt.optimize import auto_trunc_num, optimize_time_steps
from workers.aux.timestep_opt.schedule import DiscreteVPSchedule, FlowSchedule

# The main weight's grid is always "opt"; the ablation grid is named after its (other) weight.
ABLATION_LABEL = {"sigma2_over_alpha": "opt_w=s2/a", "sigma_over_alpha": "opt_w=s/a"}


@dataclass(frozen=True)
class Grid:
    """One time grid of ``nfe`` steps: ``t`` has nfe + 1 entries, decreasing."""

    name: str
    nfe: int
    t: np.ndarray
    objective: float  # Eq. (3) under the run's main weight and truncation, for every grid alike
    opt_seconds: float | None = None
    opt_iterations: int | None = None


def _trunc(trunc_num: int | None, nfe: int) -> int:
    return auto_trunc_num(nfe) if trunc_num is None else trunc_num


def vp_grids(schedule: DiscreteVPSchedule, nfe: int, baselines: Sequence[str], *, weight: Weight, ablate_weight: bool,
             init: str, trunc_num: int | None, max_order: int, max_iter: int, edm_rho: float) -> list[Grid]:
    """The baseline grids and the optimised one(s) for a VP schedule (the latter also with the other weight)."""
    orders = order_pattern(nfe, max_order)
    trunc = _trunc(trunc_num, nfe)
    grids = []
    for kind in baselines:
        lam = baseline_lambdas(schedule, nfe, kind, rho=edm_rho)
        t = schedule.t_of_lambda(lam)
        t[0], t[-1] = schedule.t_max, schedule.t_min
        grids.append(Grid(kind, nfe, t, step_objective(lam, orders, weight, trunc)))
    runs = [("opt", weight)] + ([(ABLATION_LABEL[w], w) for w in ABLATION_LABEL if w != weight]
                                 if ablate_weight else [])
    for name, w in runs:
        res = optimize_time_steps(schedule, nfe, max_order=max_order, init=init, weight=w, trunc_num=trunc_num,
                                  max_iter=max_iter, edm_rho=edm_rho)
        grids.append(Grid(name, nfe, res.t, step_objective(res.lambdas, orders, weight, trunc),
                          res.seconds, res.iterations))
    return grids


def flow_grids(nfe: int, solver: FlowSolver, *, clip: float, shift: float, weight: Weight, trunc_num: int | None,
               max_iter: int) -> list[Grid]:
    """Flow-matching grids from 1 to 0: linear (the sampler's default), SD3-shifted, uniform lambda, optimised."""
    from workers.sampling import flow_sigmas

    schedule = FlowSchedule(t_max=1.0 - clip, t_min=clip)
    orders = sampler_order_pattern(nfe, solver)
    trunc = _trunc(trunc_num, nfe)

    def objective(t: np.ndarray) -> float:
        inner = np.clip(t, clip, 1.0 - clip)  # the optimiser's view of the end points
        return step_objective(schedule.lambda_of_t(inner), orders, weight, trunc)

    def ends(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64).copy()
        t[0], t[-1] = 1.0, 0.0
        return t

    grids = [Grid("linear", nfe, ends(flow_sigmas(nfe).double().numpy()), 0.0),
             Grid(f"shift{shift:g}", nfe, ends(flow_sigmas(nfe, shift).double().numpy()), 0.0),
             Grid("unif", nfe, ends(schedule.t_of_lambda(baseline_lambdas(schedule, nfe, "unif"))), 0.0)]
    res = optimize_flow_grid(nfe, solver, clip=clip, weight=weight, trunc_num=trunc_num, max_iter=max_iter)
    grids.append(Grid("opt", nfe, ends(res.t), 0.0, res.seconds, res.iterations))
    return [Grid(g.name, g.nfe, g.t, objective(g.t), g.opt_seconds, g.opt_iterations) for g in grids]


def mean_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over samples of ||x - ref||_2 (flattened per sample)."""
    return float((x.double() - ref.double()).flatten(1).norm(dim=1).mean())


@dataclass
class ProblemRun:
    """The reference solution and each (solver, grid) run of one problem."""

    reference: torch.Tensor
    samples: dict[tuple[str, int, str], torch.Tensor]
    rows: list[dict]


def run_vp_problem(problem: str, eps_fn: EpsFn, x_init: torch.Tensor, schedule: DiscreteVPSchedule, base_config,
                   grids: Sequence[Grid], solvers: Sequence[str], reference_steps: int, round_timesteps: bool,
                   metric: Callable[[torch.Tensor], float] | None = None, show_progress: bool = True) -> ProblemRun:
    """Reference (DPM-Solver++(3M), uniform lambda, fractional timesteps) then every solver x grid."""
    ref_solver = make_solver("dpmsolver++", base_config)
    ref_t = schedule.t_of_lambda(baseline_lambdas(schedule, reference_steps, "unif"))
    ref_t[0], ref_t[-1] = schedule.t_max, schedule.t_min
    set_grid(ref_solver, ref_t, schedule, round_timesteps=False, device=x_init.device)
    reference = solve(ref_solver, eps_fn, x_init, f"{problem}: reference" if show_progress else None)
    samples, rows = {}, []
    jobs = [(s, g) for s in solvers for g in grids]
    for solver_kind, grid in progress(jobs, f"{problem}: solver x grid", show_progress):
        solver = make_solver(solver_kind, base_config)
        set_grid(solver, grid.t, schedule, round_timesteps=round_timesteps, device=x_init.device)
        x0 = solve(solver, eps_fn, x_init)
        samples[(solver_kind, grid.nfe, grid.name)] = x0
        rows.append({"problem": problem, "solver": solver_kind, "nfe": grid.nfe, "grid": grid.name,
                     "dist_to_ref": mean_l2(x0, reference), "metric": metric(x0) if metric else None})
    return ProblemRun(reference, samples, rows)


def run_flow_problem(problem: str, velocity_fn, x_init: torch.Tensor, grids_by_solver: dict[str, Sequence[Grid]],
                     reference_steps: int, metric: Callable[[torch.Tensor], float] | None = None,
                     show_progress: bool = True) -> ProblemRun:
    """The project's RL sampler on each grid; reference: dpm2 on a linear grid of ``reference_steps`` steps."""
    from workers.sampling import flow_sigmas, sample

    reference = sample(velocity_fn, x_init, flow_sigmas(reference_steps).double(), solver="dpm2").x0
    samples, rows = {}, []
    jobs = [(s, g) for s, grids in grids_by_solver.items() for g in grids]
    for solver, grid in progress(jobs, f"{problem}: solver x grid", show_progress):
        x0 = sample(velocity_fn, x_init, torch.as_tensor(grid.t, dtype=torch.float64), solver=solver).x0
        samples[(solver, grid.nfe, grid.name)] = x0
        rows.append({"problem": problem, "solver": solver, "nfe": grid.nfe, "grid": grid.name,
                     "dist_to_ref": mean_l2(x0, reference), "metric": metric(x0) if metric else None})
    return ProblemRun(reference, samples, rows)
