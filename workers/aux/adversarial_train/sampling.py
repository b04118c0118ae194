"""Few-step sampling with diffusers schedulers and the train/sample mismatch statistic.

The mismatch (the paper's motivation) is between the sampler's inputs x_t ~ p_theta(x_t) and the
training inputs x_t ~ q(x_t) = N(sqrt(abar_t) x0, (1 - abar_t) I), x0 ~ data. We measure it per sampler
step as the 1-Wasserstein distance between the distributions of the per-sample RMS norm ||x_t||_2/sqrt(d)
(the statistic the brief suggests), with x0 from the held-out test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from workers.aux.adversarial_train.training import noisy_input


def make_sampler(kind: str, ddpm_scheduler, nfe: int):
    """A diffusers scheduler for ``kind`` (ddim: DDIM eta 0; dpmsolver++: order-2 multistep) at ``nfe`` steps.

    Trailing timestep spacing starts the trajectory at t = T - 1, which matters at low NFE.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        sched = DDIMScheduler.from_config(ddpm_scheduler.config, timestep_spacing="trailing", clip_sample=False)
    elif kind == "dpmsolver++":
        sched = DPMSolverMultistepScheduler.from_config(ddpm_scheduler.config, algorithm_type="dpmsolver++",
                                                        solver_order=2, timestep_spacing="trailing")
    else:
        raise ValueError(f"sampler must be 'ddim' or 'dpmsolver++', got {kind!r}")
    sched.set_timesteps(nfe)
    return sched


@dataclass(frozen=True)
class Trajectory:
    """Final samples and the sampler's input x_t at every step (with its integer timestep)."""

    samples_BCHW: torch.Tensor
    timesteps: tuple[int, ...]
    states: tuple[torch.Tensor, ...]


@torch.no_grad()
def sample(unet: torch.nn.Module, scheduler, noise_BCHW: torch.Tensor, record: bool = False) -> Trajectory:
    """Run the deterministic sampler from ``noise`` (scaled by init_noise_sigma); NFE = len(timesteps)."""
    x = noise_BCHW * scheduler.init_noise_sigma
    steps, states = [], []
    for t in scheduler.timesteps:
        if record:
            steps.append(int(t))
            states.append(x.clone())
        eps = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(eps, t, x).prev_sample
    return Trajectory(x, tuple(steps), tuple(states))


def rms_norm(x_BCHW: torch.Tensor) -> np.ndarray:
    """||x||_2 / sqrt(d) per sample, float64."""
    return (x_BCHW.double().flatten(1).norm(dim=1) / x_BCHW[0].numel() ** 0.5).cpu().numpy()


def mismatch_per_step(traj: Trajectory, x0_ref_NCHW: torch.Tensor, alphas_cumprod: torch.Tensor,
                      generator: torch.Generator) -> list[dict[str, float]]:
    """Per sampler step: W1 between RMS-norm distributions of sampler x_t and q(x_t), and the mean norms."""
    rows = []
    for t, x in zip(traj.timesteps, traj.states, strict=True):
        eps = torch.randn(x0_ref_NCHW.shape, generator=generator)
        t_N = torch.full((len(x0_ref_NCHW),), t, dtype=torch.long)
        q = noisy_input(x0_ref_NCHW, eps, t_N, alphas_cumprod.double()).float()
        ns, nq = rms_norm(x), rms_norm(q)
        rows.append({"t": t, "w1_norm": float(wasserstein_distance(ns, nq)),
                     "sampler_norm": float(ns.mean()), "q_norm": float(nq.mean())})
    return rows
