"""Load a published or local DDPM to Skip-Tune: a diffusers directory with ``unet/`` (UNet2DModel) and
``scheduler/`` (any diffusers noise scheduler config), e.g. a saved ``DDPMPipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workers.aux.skip_tuning.skips import skip_layout


def load_skip_tunable_ddpm(path: str | Path, device: torch.device | str = "cpu"):
    """``(UNet2DModel in eval mode, scheduler)`` from ``path``; errors name the path and what to pass."""
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    unet_config = path / "unet" / "config.json"
    if not unet_config.exists():
        hint = (" It looks like a bare UNet folder: pass its parent, which must also hold scheduler/."
                if (path / "config.json").exists() else "")
        raise FileNotFoundError(f"model.path={str(path)!r} is not a diffusers DDPM directory: {unet_config} "
                                f"is missing.{hint} Point model.path at the folder that holds unet/ and "
                                "scheduler/ (e.g. a DDPMPipeline saved with save_pretrained).")
    class_name = json.loads(unet_config.read_text()).get("_class_name")
    if class_name != "UNet2DModel":
        raise TypeError(f"model.path={str(path)!r}: unet/ holds a {class_name}, but Skip-Tuning here hooks "
                        "diffusers UNet2DModel up blocks; use an unconditional UNet2DModel checkpoint")
    if not (path / "scheduler" / "scheduler_config.json").exists():
        raise FileNotFoundError(f"model.path={str(path)!r} has no scheduler/scheduler_config.json; save the "
                                "training noise scheduler next to unet/ (scheduler.save_pretrained(path / 'scheduler'))")
    unet = UNet2DModel.from_pretrained(path / "unet").to(device).eval()
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    skip_layout(unet)  # fails now, naming the block type, if the decoder has no standard skips
    return unet, scheduler
