"""Load a published VP diffusion model (a diffusers UNet2DModel + its DDPM-type scheduler) from disk.

Two layouts are accepted, both as written by diffusers:

- pipeline layout: ``<dir>/unet/config.json`` and ``<dir>/scheduler/scheduler_config.json``
  (``DDPMPipeline.save_pretrained``; also our cached digits DDPM);
- flat layout: ``<dir>/config.json`` of a UNet2DModel with ``<dir>/scheduler_config.json`` beside it
  (how e.g. the original google/ddpm-* repositories were laid out).

Nothing is downloaded: the path must be a local directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workers.aux.timestep_opt.schedule import DiscreteVPSchedule


def load_vp_model(path: str | Path, device: torch.device | str = "cpu"):
    """``(unet, scheduler, schedule)`` for the model in ``path``; the schedule is what the optimiser needs."""
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass a local diffusers DDPM folder "
                                "(unet/ + scheduler/, or config.json + scheduler_config.json)")
    if (path / "unet" / "config.json").exists() and (path / "scheduler" / "scheduler_config.json").exists():
        unet_dir, sched_dir = path / "unet", path / "scheduler"
    elif (path / "config.json").exists() and (path / "scheduler_config.json").exists():
        unet_dir, sched_dir = path, path
    else:
        raise FileNotFoundError(
            f"{path} holds no diffusers DDPM: expected unet/config.json with scheduler/scheduler_config.json "
            "(pipeline layout) or config.json with scheduler_config.json (flat layout); point at the folder "
            "that contains them, e.g. the directory DDPMPipeline.save_pretrained wrote")
    scheduler = DDPMScheduler.from_pretrained(sched_dir)
    if scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"{sched_dir}: prediction_type {scheduler.config.prediction_type!r} is not supported by "
                         "the multistep solvers here; use an epsilon- or v-prediction model")
    unet = UNet2DModel.from_pretrained(unet_dir).to(device).eval()
    return unet, scheduler, DiscreteVPSchedule.from_scheduler(scheduler)
