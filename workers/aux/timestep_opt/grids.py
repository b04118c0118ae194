"""The baseline time grids the optimised one is compared with (and initialised from).

Each returns N + 1 values of lambda, increasing, from lambda(t_max) to lambda(t_min):

- ``unif_t``: uniform in t (DDIM's "time uniform");
- ``unif``: uniform in lambda = half log-SNR (DPM-Solver's "logSNR"; the paper's init for pixel space);
- ``edm``: Karras et al.'s rho = 7 spacing of the EDM sigma = sigma_t / alpha_t;
- ``quad``: uniform in sqrt(t) (DPM-Solver's "time_quadratic").
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from workers.aux.timestep_opt.schedule import Schedule

GridKind = Literal["unif_t", "unif", "edm", "quad"]
GRID_KINDS: tuple[str, ...] = ("unif_t", "unif", "edm", "quad")


def baseline_lambdas(schedule: Schedule, num_steps: int, kind: GridKind, rho: float = 7.0) -> np.ndarray:
    """The ``kind`` grid of ``num_steps`` steps as lambdas (float64, increasing, endpoints exact)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    lam_start, lam_end = (float(v) for v in schedule.lambda_of_t(np.array([schedule.t_max, schedule.t_min])))
    if kind == "unif":
        lam = np.linspace(lam_start, lam_end, num_steps + 1)
    elif kind == "unif_t":
        lam = schedule.lambda_of_t(np.linspace(schedule.t_max, schedule.t_min, num_steps + 1))
    elif kind == "quad":
        lam = schedule.lambda_of_t(np.linspace(schedule.t_max**0.5, schedule.t_min**0.5, num_steps + 1) ** 2)
    elif kind == "edm":
        # EDM sigma = sigma_t / alpha_t = e^{-lambda}: spaced uniformly in sigma^(1/rho).
        s_max, s_min = np.exp(-lam_start), np.exp(-lam_end)
        sig = np.linspace(s_max ** (1 / rho), s_min ** (1 / rho), num_steps + 1) ** rho
        lam = -np.log(sig)
    else:
        raise ValueError(f"unknown grid kind {kind!r}; valid: {', '.join(GRID_KINDS)}")
    lam = np.asarray(lam, dtype=np.float64)
    lam[0], lam[-1] = lam_start, lam_end  # exact endpoints whatever the round trip did
    return lam
