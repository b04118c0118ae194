"""The step-selection objective of "Accelerating Diffusion Sampling with Optimized Time Steps"
(Xue et al., CVPR 2024; the official ``step_optim.py`` of scxue/DM-NonUniform is the reference).

A multistep exponential integrator in data prediction (DPM-Solver++ / UniPC's predictor) moves from
lambda_s to lambda_{s+1} with

    x_{s+1} = (sigma_{s+1} / sigma_s) x_s + sigma_{s+1} * sum_j J_{s,j} x0_theta(lambda_{s-k+1+j}),     (1)
    J_{s,j} = int_{lambda_s}^{lambda_{s+1}} e^lambda l_j(lambda) d lambda,                              (2)

where l_j is the Lagrange basis through the k = order(s) most recent nodes. If the data prediction at
node m is off by an amount proportional to w_m (w = sigma^2 / alpha by default, sigma / alpha as the
code's comment suggests for pixel space), the accumulated error is bounded by the objective

    F(lambda) = sum_{order-1 steps} |w_s J_{s,0}|
              + sum_{steps s < trunc, order >= 2} sqrt(sum_j (w_{m_j} J_{s,j})^2)
              + sum_m |c_m|,   c_m = sum_{steps s >= trunc, order >= 2} w_m J_{s,j(m)} (signed),        (3)

which the optimiser minimises over the interior lambdas with the endpoints fixed (Eq. 3 is the
official code's objective, written for any order pattern). The weights (2) are computed here in
closed form from I_m(h) = int_0^h e^u u^m du (I_0 = e^h - 1, I_m = h^m e^h - m I_{m-1}); the paper's
H0, H1, H2 are I_0, I_1, I_2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from workers.aux.timestep_opt.schedule import alpha_sigma_from_lambda

Weight = Literal["sigma2_over_alpha", "sigma_over_alpha"]


def order_pattern(num_steps: int, max_order: int = 3, lower_order_final: bool = True) -> list[int]:
    """Solver order of each step: warm-up 1, 2, ..., then ``max_order``, and (lower_order_final) ..., 2, 1.

    This is what diffusers' DPMSolverMultistepScheduler (for < 15 steps) and UniPCMultistepScheduler do with
    ``solver_order=max_order, lower_order_final=True``; for max_order = 3 it is the code's 1, 2, 3, ..., 3, 2, 1.
    """
    if num_steps < 1 or max_order < 1:
        raise ValueError(f"need num_steps >= 1 and max_order >= 1, got {num_steps}, {max_order}")
    return [min(max_order, s + 1, num_steps - s if lower_order_final else max_order) for s in range(num_steps)]


def exp_moments(h: float, max_power: int) -> list[float]:
    """I_m(h) = int_0^h e^u u^m du for m = 0..max_power (the paper's H0, H1, H2, ...)."""
    e_h = math.exp(h)
    out = [math.expm1(h)]
    for m in range(1, max_power + 1):
        out.append(h**m * e_h - m * out[m - 1])
    return out


def lagrange_exp_weights(nodes: Sequence[float], start: float, end: float) -> list[float]:
    """Eq. (2): J_j = int_start^end e^lambda l_j(lambda) d lambda for the Lagrange basis through ``nodes``.

    Written as e^start * int_0^h e^u l_j(start + u) du with the basis polynomial expanded in powers of u.
    Plain Python floats: the optimiser evaluates this ~10^5 times on 1-3 nodes, where numpy's per-call
    overhead would dominate.
    """
    shifted = [float(n) - start for n in nodes]
    moments = exp_moments(end - start, len(shifted) - 1)
    scale = math.exp(start)
    weights = []
    for j, r_j in enumerate(shifted):
        coeffs, denom = [1.0], 1.0  # ascending powers of u of prod_{i != j} (u - r_i)
        for i, r_i in enumerate(shifted):
            if i != j:
                coeffs = [a - r_i * b for a, b in zip([0.0, *coeffs], [*coeffs, 0.0], strict=True)]
                denom *= r_j - r_i
        weights.append(scale * sum(c * m for c, m in zip(coeffs, moments, strict=True)) / denom)
    return weights


def data_error_weights(lambdas: np.ndarray, weight: Weight = "sigma2_over_alpha") -> np.ndarray:
    """w_m, the assumed scale of the data-prediction error at node m (sigma^2/alpha is the code's default)."""
    alpha, sigma = alpha_sigma_from_lambda(lambdas)
    if weight == "sigma2_over_alpha":
        return sigma**2 / alpha
    if weight == "sigma_over_alpha":
        return sigma / alpha
    raise ValueError(f"weight must be 'sigma2_over_alpha' or 'sigma_over_alpha', got {weight!r}")


def step_objective(lambdas: np.ndarray, orders: Sequence[int], weight: Weight = "sigma2_over_alpha",
                   trunc_num: int = 3) -> float:
    """Eq. (3) for a full grid ``lambdas`` (N + 1 increasing values) and one order per step (N of them)."""
    lambdas = np.asarray(lambdas, dtype=np.float64)
    num_steps = len(lambdas) - 1
    if len(orders) != num_steps:
        raise ValueError(f"got {len(orders)} orders for {num_steps} steps")
    w = data_error_weights(lambdas, weight).tolist()
    lam = lambdas.tolist()
    total = 0.0
    signed = [0.0] * (num_steps + 1)  # c_m of Eq. (3)
    for s, k in enumerate(orders):
        if k > s + 1:
            raise ValueError(f"step {s} cannot have order {k}: only {s + 1} earlier nodes exist")
        idx = range(s - k + 1, s + 1)
        terms = [w[m] * j for m, j in zip(idx, lagrange_exp_weights([lam[m] for m in idx], lam[s], lam[s + 1]),
                                          strict=True)]
        if k == 1:
            total += abs(terms[0])
        elif s < trunc_num:
            total += math.sqrt(sum(x * x for x in terms))
        else:
            for m, x in zip(idx, terms, strict=True):
                signed[m] += x
    return total + sum(abs(c) for c in signed)
