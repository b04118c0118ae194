"""The diffusion prior: a diffusers UNet2DModel and its noise schedule, as a counted denoiser.

``DiffusionPrior`` turns the network's output (epsilon, sample or v prediction, as the scheduler
config says) into the data prediction ``x_theta`` and the matching noise, the form the paper's
DDIM step uses, and counts network evaluations per sample (NFE). ``load_prior`` reads a published
or locally trained DDPM directory in either diffusers layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from workers.aux.sim_recovery.ddim import per_sample
from workers.aux.sim_recovery.schedule import VpSchedule

PredictionType = Literal["epsilon", "sample", "v_prediction"]


def to_data_and_noise(output: torch.Tensor, x_t: torch.Tensor, alpha_B: torch.Tensor, sigma_B: torch.Tensor,
                      prediction_type: PredictionType) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` from a network output under ``x_t = alpha x0 + sigma eps``.

    epsilon: ``x0 = (x_t - sigma eps) / alpha``; sample: ``eps = (x_t - alpha x0) / sigma`` (the
    paper's data-prediction form); v: ``x0 = alpha x_t - sigma v``, ``eps = sigma x_t + alpha v``.
    """
    a, s = per_sample(alpha_B, x_t), per_sample(sigma_B, x_t)
    if prediction_type == "epsilon":
        return (x_t - s * output) / a, output
    if prediction_type == "sample":
        return output, (x_t - a * output) / s
    if prediction_type == "v_prediction":
        return a * x_t - s * output, s * x_t + a * output
    raise ValueError(f"prediction_type must be epsilon, sample or v_prediction, got {prediction_type!r}")


class DiffusionPrior:
    """A pretrained DDPM used as the prior ``x_theta`` of SIM-DMIS, with an NFE counter.

    ``nfe`` counts network evaluations per sample (a batch of 8 evaluated once adds 1, not 8), so
    it is the paper's NFE of one reconstruction.
    """

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: torch.Tensor,
                 prediction_type: PredictionType = "epsilon") -> None:
        self.unet = unet.eval()
        self.schedule = VpSchedule(alphas_cumprod)
        self.prediction_type = prediction_type
        self.nfe = 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)[0]
        return (cfg.in_channels, size, size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser: ``(x0_hat, eps_hat)`` at real-valued per-sample times ``t_B``."""
        self.nfe += 1
        alpha, sigma = self.schedule.alpha_sigma(t_B)
        out = self.unet(x_t, t_B.to(device=x_t.device, dtype=torch.float32)).sample
        return to_data_and_noise(out, x_t, alpha.to(x_t.device), sigma.to(x_t.device), self.prediction_type)


def load_prior(path: str | Path, device: torch.device | str = "cpu") -> DiffusionPrior:
    """A DDPM directory in diffusers layout as a :class:`DiffusionPrior`.

    Accepts the pipeline layout (``unet/`` and ``scheduler/`` sub-folders, as saved by
    ``DDPMPipeline.save_pretrained`` or ``workers.aux.common.ddpm``) and the flat layout of checkpoints
    such as ``google/ddpm-cifar10-32`` (``config.json``, weights and ``scheduler_config.json`` side by
    side). Any scheduler config with a beta schedule works (DDPM, DDIM, ...): only ``alphas_cumprod``
    and ``prediction_type`` are read from it.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    if (path / "unet" / "config.json").exists() and (path / "scheduler" / "scheduler_config.json").exists():
        unet_dir, sched_dir = path / "unet", path / "scheduler"
    elif (path / "config.json").exists() and (path / "scheduler_config.json").exists():
        unet_dir = sched_dir = path
    else:
        raise FileNotFoundError(
            f"prior.path={str(path)!r} is not a diffusers DDPM directory: expected unet/config.json and "
            "scheduler/scheduler_config.json (pipeline layout) or config.json and scheduler_config.json side by "
            "side (flat layout, e.g. google/ddpm-cifar10-32). Point prior.path at such a folder, or leave it "
            "unset to use the shared digits DDPM.")
    unet = UNet2DModel.from_pretrained(unet_dir).to(device)
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(sched_dir))
    prediction = scheduler.config.prediction_type
    return DiffusionPrior(unet, scheduler.alphas_cumprod, prediction)
