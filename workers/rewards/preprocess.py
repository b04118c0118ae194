"""Image preprocessing for the vision towers of reward models, in torch, on tensors.

Shape legend:
    B: images in the batch
    H, W: input height and width
    S: the model's square input size (``vision_config.image_size``)

Rewards receive decoded images as float tensors in [0, 1] (often already on the GPU), so preprocessing stays
in torch instead of round-tripping through PIL (as CLIPProcessor does) or depending on torchvision. Two
geometries are used by the published reward models:

* ``"crop"`` (CLIP processors, PickScore, the aesthetic predictor, ImageReward): resize so the shorter side
  is S, then take the centre S x S crop. Sizes and offsets follow transformers' ``CLIPImageProcessor``:
  long side ``int(S * long / short)``, crop offset ``(size - S) // 2``.
* ``"pad"`` (HPSv2, open_clip's ``ResizeMaxSize``): resize so the longer side is S (``round``), then pad
  the short side with black to S, split as ``pad // 2`` before and the rest after. Padding happens before
  normalisation, so padded pixels are 0 in [0, 1] space.

Resampling is bicubic with antialiasing, which is the PIL filter (Keys a = -0.5, support scaled by the
downsampling factor) that all of these models were trained with; results are clamped to [0, 1] because PIL
resizes in uint8 and so clips overshoot. For the same uint8 input this matches PIL to about 1/255 (PIL rounds
its output to uint8, we keep floats); see the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImagePreprocess", "preprocess_images"]

Geometry = Literal["crop", "pad"]


@dataclass(frozen=True)
class ImagePreprocess:
    """How to turn [B, 3, H, W] images in [0, 1] into a vision tower's [B, 3, S, S] input.

    Attributes:
        size: S, the square side the vision tower expects.
        mean, std: per-channel normalisation (RGB), applied after resizing: (x - mean) / std.
        geometry: ``"crop"`` (shorter side to S, centre crop) or ``"pad"`` (longer side to S, pad with black).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    geometry: Geometry = "crop"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"ImagePreprocess.size must be >= 1, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"ImagePreprocess needs 3 means and 3 positive stds, got {self.mean} / {self.std}")
        if self.geometry not in ("crop", "pad"):
            raise ValueError(f"ImagePreprocess.geometry must be 'crop' or 'pad', got {self.geometry!r}")


def _resize_bicubic(images_B3HW: Tensor, height: int, width: int) -> Tensor:
    """Bicubic resize with antialiasing (PIL's filter), clamped to [0, 1]; identity when the size already matches."""
    if images_B3HW.shape[-2:] == (height, width):
        return images_B3HW
    resized = F.interpolate(images_B3HW, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0)


def _crop_geometry(images_B3HW: Tensor, size: int) -> Tensor:
    height, width = images_B3HW.shape[-2:]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_h, new_w = (new_long, size) if width <= height else (size, new_long)
    resized = _resize_bicubic(images_B3HW, new_h, new_w)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return resized[..., top : top + size, left : left + size]


def _pad_geometry(images_B3HW: Tensor, size: int) -> Tensor:
    height, width = images_B3HW.shape[-2:]
    scale = size / float(max(height, width))
    new_h, new_w = round(height * scale), round(width * scale)
    resized = _resize_bicubic(images_B3HW, new_h, new_w)
    pad_h, pad_w = size - new_h, size - new_w
    # F.pad takes (left, right, top, bottom) for the last two dims.
    return F.pad(resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


def preprocess_images(images_B3HW: Tensor, spec: ImagePreprocess, dtype: torch.dtype = torch.float32) -> Tensor:
    """Resize, crop or pad, and normalise images [B, 3, H, W] in [0, 1] -> pixel values [B, 3, S, S] in ``dtype``.

    Computed in float32 whatever the input dtype (bf16 images would lose the resize's precision), on the
    images' device.
    """
    images = images_B3HW.to(torch.float32)
    if spec.geometry == "crop":
        images = _crop_geometry(images, spec.size)
    else:
        images = _pad_geometry(images, spec.size)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std).to(dtype)
