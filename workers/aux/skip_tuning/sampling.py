"""Few-step deterministic samplers from diffusers, built from the model's own training scheduler.

Both arms of a comparison (baseline and Skip-Tuned) call ``sample`` with the same sampler name, NFE,
initial noise and batch chunking; only the hook differs (``arm_hash`` records that).

Tensor legend: N samples, B batch, C channels, H, W spatial.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from workers.aux.common.runtime import progress


def make_sampler(name: str, train_scheduler_config: dict[str, Any]):
    """``ddim`` (eta = 0, trailing spacing) or ``dpmsolver++`` (2M, lower-order final step), from diffusers."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        # trailing spacing starts at t = T - 1, which matters at 5-10 steps; alpha_0 := 1 ends at x0
        return DDIMScheduler.from_config(train_scheduler_config, timestep_spacing="trailing",
                                         set_alpha_to_one=True, clip_sample=False)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(train_scheduler_config, algorithm_type="dpmsolver++",
                                                       solver_order=2, lower_order_final=True,
                                                       timestep_spacing="trailing")
    raise ValueError(f"sampler must be 'ddim' or 'dpmsolver++', got {name!r}")


@torch.no_grad()
def sample(unet: nn.Module, sampler, noise_NCHW: torch.Tensor, nfe: int, batch_size: int,
           show_progress: bool = False, desc: str = "sample") -> tuple[torch.Tensor, int]:
    """Run the sampler from ``noise`` with ``nfe`` steps; returns ``(x0, network evaluations per sample)``."""
    device = next(unet.parameters()).device
    out, calls = [], 0
    chunks = noise_NCHW.split(batch_size)
    for chunk_BCHW in progress(chunks, desc, show_progress, total=len(chunks)):
        sampler.set_timesteps(nfe)  # also resets the multistep solver's history
        x = chunk_BCHW.to(device) * sampler.init_noise_sigma
        calls = 0
        for t in sampler.timesteps:
            model_out = unet(sampler.scale_model_input(x, t), t).sample
            calls += 1
            x = sampler.step(model_out, t, x).prev_sample
        out.append(x.cpu())
    return torch.cat(out), calls


def arm_hash(**settings: Any) -> str:
    """A short hash of everything an arm is run with except rho (sampler, NFE, seeds, sizes, model)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
