"""Constrained trust-region optimisation of the time steps (Xue et al. 2024; ``StepOptim.get_ts_lambdas``).

Minimise the objective of :func:`~workers.aux.timestep_opt.objective.step_objective` over the N - 1
interior lambdas with scipy's ``trust-constr`` under the linear constraints
lambda(t_max) <= lambda_1 <= ... <= lambda_{N-1} <= lambda(t_min), starting from a baseline grid;
the endpoints stay fixed. The time steps are t_i = t(lambda_i).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import LinearConstraint, minimize

from workers.aux.timestep_opt.grids import GridKind, baseline_lambdas
from workers.aux.timestep_opt.objective import Weight, order_pattern, step_objective
from workers.aux.timestep_opt.schedule import Schedule


@dataclass(frozen=True)
class StepOptResult:
    """An optimised grid: ``t`` decreasing from t_max to t_min, ``lambdas`` increasing, both N + 1 long."""

    t: np.ndarray
    lambdas: np.ndarray
    init_lambdas: np.ndarray
    orders: list[int]
    objective_init: float
    objective_opt: float
    seconds: float
    iterations: int
    message: str = field(default="")


def auto_trunc_num(num_steps: int) -> int:
    """The code comment's advice: truncNum = 3 for NFE <= 7 and 0 above (the code itself hard-codes 3)."""
    return 3 if num_steps <= 7 else 0


def monotone_constraint(num_steps: int, lam_start: float, lam_end: float) -> LinearConstraint:
    """A x >= lb for x = interior lambdas: x_1 >= lam_start, x_{i+1} - x_i >= 0, -x_{N-1} >= -lam_end."""
    a = np.zeros((num_steps, num_steps - 1))
    for i in range(num_steps - 1):
        a[i, i] = 1.0
        a[i + 1, i] = -1.0
    lb = np.zeros(num_steps)
    lb[0], lb[-1] = lam_start, -lam_end
    return LinearConstraint(a, lb, np.full(num_steps, np.inf))


def optimize_time_steps(schedule: Schedule, num_steps: int, *, max_order: int = 3, lower_order_final: bool = True,
                        orders: Sequence[int] | None = None, init: GridKind = "unif", weight: Weight = "sigma2_over_alpha", trunc_num: int | None = 3,
                        max_iter: int = 1000, edm_rho: float = 7.0) -> StepOptResult:
    """Optimise a ``num_steps``-step grid for the solver order pattern ``order_pattern(num_steps, max_order)``.

    Args:
        schedule: the model's noise schedule (:class:`DiscreteVPSchedule` or :class:`FlowSchedule`).
        num_steps: N = NFE of a multistep solver (one model call per step), >= 2.
        max_order: 3 for DPM-Solver++(3M) / UniPC-3, 2 for 2M, 1 for DDIM / Euler.
        lower_order_final: whether the pattern ends ..., 2, 1 (diffusers' ``lower_order_final`` below 15 steps).
        orders: an explicit per-step order pattern (N entries), overriding ``max_order``/``lower_order_final``.
        init: the starting grid (``unif`` = uniform lambda, the paper's pixel-space choice).
        weight: the data-error weight w of Eq. (3).
        trunc_num: steps below it use the per-step root-sum-square form, later ones the signed per-node sum;
            None applies the code comment's rule (:func:`auto_trunc_num`).
        max_iter: trust-constr's iteration cap.
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2 (there is no interior step to move), got {num_steps}")
    orders = list(orders) if orders is not None else order_pattern(num_steps, max_order, lower_order_final)
    if len(orders) != num_steps:
        raise ValueError(f"orders has {len(orders)} entries for {num_steps} steps")
    trunc = auto_trunc_num(num_steps) if trunc_num is None else trunc_num
    init_lam = baseline_lambdas(schedule, num_steps, init, rho=edm_rho)
    lam_start, lam_end = float(init_lam[0]), float(init_lam[-1])

    def full(interior: np.ndarray) -> np.ndarray:
        return np.concatenate(([lam_start], interior, [lam_end]))

    def fun(interior: np.ndarray) -> float:
        return step_objective(full(interior), orders, weight, trunc)

    start = time.perf_counter()
    with warnings.catch_warnings():
        # trust-constr warns that a linear constraint's Hessian is zero ("delta_grad == 0.0"); it is.
        warnings.simplefilter("ignore", UserWarning)
        res = minimize(fun, init_lam[1:-1], method="trust-constr",
                       constraints=[monotone_constraint(num_steps, lam_start, lam_end)],
                       options={"maxiter": max_iter, "verbose": 0})
    seconds = time.perf_counter() - start
    lam = full(np.asarray(res.x, dtype=np.float64))
    t = schedule.t_of_lambda(lam)
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return StepOptResult(t=t, lambdas=lam, init_lambdas=init_lam, orders=orders,
                         objective_init=step_objective(init_lam, orders, weight, trunc),
                         objective_opt=step_objective(lam, orders, weight, trunc), seconds=seconds,
                         iterations=int(res.nit), message=str(res.message))
