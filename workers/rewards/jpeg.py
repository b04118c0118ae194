"""JPEG (in)compressibility rewards (DDPO, arXiv 2305.13301; also in flow_grpo).

Shape legend:
    B: images in the batch

The file size of the image saved as JPEG at quality 95 with Pillow, in kilobytes (bytes / 1000), as
ddpo-pytorch and flow_grpo compute it. Compressibility rewards small files (flat, smooth images) with
-size_kB; incompressibility rewards large files (detail, noise) with +size_kB.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from workers.rewards.validation import check_images

__all__ = ["JPEG_QUALITY", "jpeg_compressibility", "jpeg_incompressibility", "jpeg_size_kb"]

JPEG_QUALITY = 95


def jpeg_size_kb(images_B3HW: Tensor) -> Tensor:
    """JPEG file size of each image in kB (1 kB = 1000 bytes), float32 [B] on the images' device.

    Images in [0, 1] are quantised to uint8 by round(255 x), the usual PNG/JPEG export; a uint8
    [H, W, 3] array is read by Pillow as RGB.
    """
    pixels_BHW3 = (
        (images_B3HW.detach().float() * 255.0)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )
    sizes_kb = []
    for pixels_HW3 in pixels_BHW3:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels_HW3)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        sizes_kb.append(buffer.tell() / 1000.0)
    return torch.tensor(sizes_kb, dtype=torch.float32, device=images_B3HW.device)


def jpeg_compressibility(images_B3HW: Tensor, prompts: list[str]) -> Tensor:
    """Reward = -(JPEG size in kB) at quality 95; higher for more compressible images. Returns float32 [B].

    ``prompts`` are only checked against the batch size; the reward ignores them.
    """
    check_images(images_B3HW, prompts)
    return -jpeg_size_kb(images_B3HW)


def jpeg_incompressibility(images_B3HW: Tensor, prompts: list[str]) -> Tensor:
    """Reward = +(JPEG size in kB) at quality 95; higher for less compressible images. Returns float32 [B]."""
    check_images(images_B3HW, prompts)
    return jpeg_size_kb(images_B3HW)
