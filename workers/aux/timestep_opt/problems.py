"""The models the experiment samples from: exact Gaussian-mixture predictors and a diffusers UNet.

- :func:`gmm_vp_eps_fn`: the exact noise prediction of a mixture under a discrete VP schedule, called
  with the scheduler's model timestep (integer or fractional), as a trained DDPM would be.
- :func:`gmm_flow_velocity_fn`: the exact flow-matching velocity u = (x_t - E[x_0 | x_t]) / t for
  x_t = (1 - t) x_0 + t eps, written with the posterior mean so that t = 1 (alpha = 0) is finite.
- :func:`unet_eps_fn`: a UNet2DModel's output at a model timestep, batched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from workers.aux.common.data import GaussianMixture2D
from workers.aux.timestep_opt.schedule import DiscreteVPSchedule


def gmm_vp_eps_fn(gmm: GaussianMixture2D, schedule: DiscreteVPSchedule) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """eps(x_t, n) with alpha, sigma of model timestep n (t = (n + 1) / N, log alpha interpolated)."""

    def eps(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (float(timestep) + 1.0) / schedule.num_train_timesteps
        alpha = float(np.exp(schedule.log_alpha(t)))
        return gmm.eps(x.double(), alpha, (1.0 - alpha * alpha) ** 0.5).to(x.dtype)

    return eps


def gmm_posterior_mean(gmm: GaussianMixture2D, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] for x_t = alpha x_0 + sigma eps; alpha, sigma per row (N,). Finite at alpha = 0."""
    alpha, sigma = alpha.reshape(-1, 1, 1).to(x.dtype), sigma.reshape(-1, 1, 1).to(x.dtype)
    var = (alpha * gmm.std) ** 2 + sigma**2
    means = gmm.means.to(x.dtype).unsqueeze(0)  # (1, M, d)
    diff = x.unsqueeze(1) - alpha * means  # (N, M, d)
    logits = torch.log(gmm.weights.to(x.dtype)) - (diff**2).sum(-1) / (2 * var[..., 0])
    resp = torch.softmax(logits, dim=1).unsqueeze(-1)
    per_component = means + alpha * gmm.std**2 / var * diff  # E[x_0 | x_t, component]
    return (resp * per_component).sum(1)


def gmm_flow_velocity_fn(gmm: GaussianMixture2D) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """v(x_t, t) = E[eps - x_0 | x_t] = (x_t - E[x_0 | x_t]) / t, the sampler's ``velocity_fn``."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = gmm_posterior_mean(gmm, x, 1.0 - t, t)
        return (x - x0) / t.reshape(-1, 1).to(x.dtype)

    return velocity


def unet_eps_fn(unet) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The UNet's prediction at one model timestep for the whole batch."""

    @torch.no_grad()
    def eps(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        steps = torch.as_tensor(timestep, device=x.device).reshape(1).expand(x.shape[0])
        return unet(x, steps).sample

    return eps
