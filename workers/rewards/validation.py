"""Input checks shared by every reward function.

Shape legend:
    B: images in the batch

Every reward takes ``images_B3HW``: a float tensor of RGB images with values in [0, 1] (the VAE decode
mapped from [-1, 1] and clamped), shape [B, 3, H, W], plus one prompt per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RANGE_TOLERANCE", "check_images"]

# Decoded images are clamped to [0, 1] but may come through a bf16 cast; anything further out than this is
# a wrong value range (e.g. [-1, 1] or [0, 255]) rather than rounding.
RANGE_TOLERANCE = 1e-3


def check_images(images_B3HW: Tensor, prompts: list[str]) -> None:
    """Raise ValueError naming the problem if ``images_B3HW`` / ``prompts`` are not a valid reward input."""
    if not isinstance(images_B3HW, Tensor):
        raise ValueError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images_B3HW).__name__}")
    if images_B3HW.ndim != 4:
        raise ValueError(f"images must have 4 dims [B, 3, H, W], got shape {tuple(images_B3HW.shape)}")
    if images_B3HW.shape[1] != 3:
        raise ValueError(
            f"images must have 3 (RGB) channels in dim 1 ([B, 3, H, W]), got shape {tuple(images_B3HW.shape)}; "
            "channels-last input needs .permute(0, 3, 1, 2)"
        )
    if images_B3HW.shape[2] == 0 or images_B3HW.shape[3] == 0:
        raise ValueError(f"images have an empty spatial size: shape {tuple(images_B3HW.shape)}")
    if not images_B3HW.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images_B3HW.dtype}")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list[str], one per image")
    if images_B3HW.shape[0] != len(prompts):
        raise ValueError(f"batch size mismatch: {images_B3HW.shape[0]} images but {len(prompts)} prompts")
    if images_B3HW.numel() == 0:
        return
    if not torch.isfinite(images_B3HW).all():
        raise ValueError("images contain NaN or Inf")
    low = float(images_B3HW.amin().item())
    high = float(images_B3HW.amax().item())
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"image values must be in [0, 1], got min {low:.4g} max {high:.4g}; map [-1, 1] with (x + 1) / 2 "
            "or [0, 255] with x / 255, then clamp"
        )
