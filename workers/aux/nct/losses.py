"""The NCT objective (paper section 3.2, Algorithm 1) as pure tensor functions.

Shape legend: B batch, C channels, H x W image size; N number of coupling levels.

- Noise coupling (Lemma 1): z_t = alpha_t z + sigma_t eps with alpha_t = sqrt(1 - sigma_t^2) (VP),
  so (z_0, c) is the coupled pair of p(c | f_theta(z)) p(z) and (z_1, c) = (eps, c) is independent.
- Consistency loss: d(f_{theta,phi}(z_{t_{k+1}}, c), sg[f_{theta,phi}(z_{t_k}, c)]) with the SAME eps
  for both levels (Theorem 1's one-particle form, App. A Remark 1).
- Boundary loss: d(f_{theta,phi}(z, c), f_theta(z)) on coupled pairs.
- Primal-dual (Eq. 12, from min L_con s.t. L_bound <= xi): lambda <- max(0, lambda + eta (L_bound - xi))
  (the standard projected dual ascent of Chamon et al. 2021; the exact form of Eq. 12 is unverified).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Distance = Literal["l2", "pseudo_huber"]
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sigma_grid(num_levels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """0 = sigma_{t_0} < ... < sigma_{t_N} = 1, uniform in sigma: (N + 1,)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    return torch.linspace(0.0, 1.0, num_levels + 1, dtype=dtype)


def couple_noise(z_BCHW: torch.Tensor, eps_BCHW: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(1 - sigma_t^2) z + sigma_t eps (Lemma 1's VP interpolation; alpha_0 = 1, alpha_1 = 0)."""
    sigma = sigma_B.to(z_BCHW).view(-1, *([1] * (z_BCHW.dim() - 1)))
    alpha = (1.0 - sigma.pow(2)).clamp_min(0.0).sqrt()
    return alpha * z_BCHW + sigma * eps_BCHW


def distance(a_BCHW: torch.Tensor, b_BCHW: torch.Tensor, kind: Distance = "l2",
             huber_c: float = 0.03) -> torch.Tensor:
    """Per-sample d(a, b): mean squared error, or pseudo-Huber sqrt(mse + c^2) - c (App. A Remark 1). (B,)."""
    mse = (a_BCHW - b_BCHW).pow(2).flatten(1).mean(1)
    if kind == "l2":
        return mse
    if kind == "pseudo_huber":
        return (mse + huber_c ** 2).sqrt() - huber_c
    raise ValueError(f"distance must be 'l2' or 'pseudo_huber', got {kind!r}")


def consistency_loss(model: Model, z_BCHW: torch.Tensor, eps_BCHW: torch.Tensor, cond_BCHW: torch.Tensor,
                     level_B: torch.Tensor, sigmas: torch.Tensor, kind: Distance = "l2",
                     huber_c: float = 0.03) -> torch.Tensor:
    """L_con: the less-coupled output regressed onto the stop-gradient more-coupled one (Alg. 1). Scalar.

    Both levels use the same eps (the coupling of Theorem 1); the target has no gradient (sg[.]).
    """
    z_lo = couple_noise(z_BCHW, eps_BCHW, sigmas[level_B])
    z_hi = couple_noise(z_BCHW, eps_BCHW, sigmas[level_B + 1])
    with torch.no_grad():
        target = model(z_lo, cond_BCHW)
    return distance(model(z_hi, cond_BCHW), target, kind, huber_c).mean()


def boundary_loss(model: Model, z_BCHW: torch.Tensor, cond_BCHW: torch.Tensor, x_BCHW: torch.Tensor,
                  kind: Distance = "l2", huber_c: float = 0.03) -> torch.Tensor:
    """L_bound: with its own c (coupled), the controlled output must equal the frozen f_theta(z). Scalar."""
    return distance(model(z_BCHW, cond_BCHW), x_BCHW, kind, huber_c).mean()


def dual_update(lam: float, bound_loss: float, xi: float, dual_lr: float) -> float:
    """Projected dual ascent on lambda for the constraint L_bound <= xi (Eq. 12, standard form)."""
    return max(0.0, lam + dual_lr * (bound_loss - xi))


def denoising_loss(model: Model, z_BCHW: torch.Tensor, eps_BCHW: torch.Tensor, cond_BCHW: torch.Tensor,
                   x_BCHW: torch.Tensor, level_B: torch.Tensor, sigmas: torch.Tensor, kind: Distance = "l2",
                   huber_c: float = 0.03) -> torch.Tensor:
    """The naive adapter of section 3.1: regress f(z_t, c) onto x = f_theta(z) at every level (-> E[x | z_t, c])."""
    z_t = couple_noise(z_BCHW, eps_BCHW, sigmas[level_B])
    return distance(model(z_t, cond_BCHW), x_BCHW, kind, huber_c).mean()
