"""Load the pretrained epsilon-prediction DPM that adversarial fine-tuning starts from.

Accepts a local diffusers directory in pipeline layout (``unet/`` + ``scheduler/``, as written by
``DDPMPipeline.save_pretrained`` or a downloaded DDPM repo such as google/ddpm-cifar10-32), or, when
``base.path`` is unset, the shared digits DDPM of ``workers.aux.common.ddpm``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workers.aux.common.ddpm import DdpmSpec, load_ddpm, pretrained_digits_ddpm


class CheckpointError(ValueError):
    """A checkpoint directory that cannot serve as the AT starting point; the message says how to fix it."""


def load_pretrained_dpm(path: str | Path, device: torch.device | str = "cpu"):
    """(UNet2DModel, DDPMScheduler) from a diffusers DDPM directory, checked to predict epsilon."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"base.path={str(path)!r} is not a directory; point it at a diffusers DDPM "
                              "directory holding unet/ and scheduler/ (e.g. DDPMPipeline.save_pretrained output)")
    if (path / "config.json").exists() and not (path / "unet").is_dir():
        raise CheckpointError(f"base.path={str(path)!r} holds a bare model (config.json at the top); pass its "
                              "parent pipeline directory with unet/ and scheduler/ sub-folders")
    for sub, name in (("unet", "config.json"), ("scheduler", "scheduler_config.json")):
        if not (path / sub / name).exists():
            raise CheckpointError(f"base.path={str(path)!r} has no {sub}/{name}; a diffusers DDPM directory "
                                  "needs unet/config.json (+ weights) and scheduler/scheduler_config.json")
    unet, scheduler = load_ddpm(path, device)
    if scheduler.config.prediction_type != "epsilon":
        raise CheckpointError(f"{path}/scheduler predicts {scheduler.config.prediction_type!r}; the AT target "
                              "eps + delta/sigma_t needs an epsilon-prediction DPM")
    return unet, scheduler


def check_digits_compatible(unet, image_size: int = 16) -> None:
    """The experiment trains on 1-channel 16x16 digits: refuse other checkpoints with the reason."""
    cfg = unet.config
    if cfg.in_channels != 1 or cfg.out_channels != 1 or cfg.sample_size != image_size:
        raise CheckpointError(f"base.path model is {cfg.in_channels}->{cfg.out_channels} channels at "
                              f"{cfg.sample_size}px; the digits experiment needs 1->1 channels at {image_size}px "
                              "(use the algorithm from code for other data)")


def base_dpm(path: str | None, channels: tuple[int, ...], train_steps: int, ema_decay: float,
             show_progress: bool = True):
    """The starting DPM of the experiment: ``path`` if given, else the cached shared digits DDPM."""
    if path is not None:
        unet, scheduler = load_pretrained_dpm(path)
        check_digits_compatible(unet)
        return unet, scheduler
    spec = DdpmSpec(channels=tuple(channels), train_steps=train_steps, ema_decay=ema_decay)
    return pretrained_digits_ddpm(spec, show_progress=show_progress)
