"""Loaders for published weights: an SD-class one-step generator with a ControlNet adapter, or ours.

At small scale the adapter is hand-written (``adapter.ControlAdapter``); users who have a real
distilled SD-class one-step generator (diffusers layout, ``unet/`` = ``UNet2DConditionModel``) get
the paper's adapter class, ``ControlNetModel``: loaded from ``controlnet/`` when present (a trained
NCT adapter), else initialised from the UNet with ``ControlNetModel.from_unet`` (App. B: "ControlNet
initialised per the original paper").
"""

from __future__ import annotations

from pathlib import Path

import torch

from workers.aux.common.one_step import OneStepGenerator, load_one_step_generator
from workers.aux.nct.adapter import ControlAdapter


def load_sd_generator_with_controlnet(path: str | Path, device: torch.device | str = "cpu"):
    """(UNet2DConditionModel, ControlNetModel) of a one-step SD-class generator directory.

    ``path`` holds ``unet/config.json`` (the frozen generator); an optional ``controlnet/config.json``
    holds a trained adapter, otherwise the ControlNet is a fresh copy of the UNet's encoder.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    path = Path(path)
    if not (path / "unet" / "config.json").exists():
        raise FileNotFoundError(
            f"{path} is not a diffusers one-step generator directory (expected unet/config.json with a "
            "UNet2DConditionModel); pass the pipeline folder that holds unet/ (and optionally controlnet/)")
    unet = UNet2DConditionModel.from_pretrained(path / "unet").to(device).eval().requires_grad_(False)
    if (path / "controlnet" / "config.json").exists():
        controlnet = ControlNetModel.from_pretrained(path / "controlnet")
    else:
        controlnet = ControlNetModel.from_unet(unet)
    return unet, controlnet.to(device)


def save_adapter(adapter: ControlAdapter, path: str | Path) -> Path:
    """Save our adapter's weights (``adapter.pt``) next to nothing else: the generator is loaded separately."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(adapter.state_dict(), path / "adapter.pt")
    return path


def load_adapter(generator: OneStepGenerator, path: str | Path, cond_channels: int, hint_width: int = 16,
                 device: torch.device | str = "cpu") -> ControlAdapter:
    """An adapter saved by ``save_adapter`` for ``generator`` (shapes must match its UNet)."""
    path = Path(path)
    if not (path / "adapter.pt").exists():
        raise FileNotFoundError(f"{path} has no adapter.pt; pass a folder written by "
                                "workers.aux.nct.loader.save_adapter")
    adapter = ControlAdapter(generator, cond_channels, hint_width)
    adapter.load_state_dict(torch.load(path / "adapter.pt", map_location=device, weights_only=True))
    return adapter.to(device).eval()


__all__ = ["load_adapter", "load_one_step_generator", "load_sd_generator_with_controlnet", "save_adapter"]
