"""Condition models h(x) of NCT (the paper's p(c|x), e.g. c = Canny(x)) and their consistency metrics.

Shape legend: B batch, H x W image size (16), K layout size, C condition-map channels.

Every control is a deterministic extractor applied to generated images only (no data); ``as_map``
turns c into the (B, C, H, W) map that the adapter's hint encoder reads, as ControlNet feeds its
condition image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

ControlKind = Literal["layout", "edges", "class"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def layout(x_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    """The coarse intensity layout: average pooling to ``size`` x ``size`` (a 4x SR-style control)."""
    return F.adaptive_avg_pool2d(x_BCHW, size)


def sobel_edges(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude (replicate padding), the soft edge map of the image."""
    kx = _SOBEL_X.to(x_BCHW)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    grad = F.conv2d(F.pad(x_BCHW, (1, 1, 1, 1), mode="replicate"), kernels)
    return grad.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()


@dataclass
class ConditionModel:
    """c = h(x) for one control kind. ``classifier`` is needed for ``class`` (a frozen digits classifier)."""

    kind: ControlKind
    image_size: int
    layout_size: int = 4
    classifier: torch.nn.Module | None = None
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.kind == "class" and self.classifier is None:
            raise ValueError("ConditionModel(kind='class') needs a classifier (e.g. metrics.digits_classifier(16))")

    @property
    def map_channels(self) -> int:
        return self.num_classes if self.kind == "class" else 1

    @torch.no_grad()
    def extract(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """c = h(x): (B, 1, K, K) layout, (B, 1, H, W) edges, or (B,) int64 class ids."""
        if self.kind == "layout":
            return layout(x_BCHW, self.layout_size)
        if self.kind == "edges":
            return sobel_edges(x_BCHW)
        return self.classifier(x_BCHW.clamp(-1, 1)).argmax(1)

    def as_map(self, c: torch.Tensor) -> torch.Tensor:
        """The adapter's input: c as a (B, C, H, W) map (nearest upsampling / one-hot planes)."""
        if self.kind == "layout":
            return F.interpolate(c, size=self.image_size, mode="nearest")
        if self.kind == "edges":
            return c
        planes = F.one_hot(c, self.num_classes).float()
        return planes[:, :, None, None].expand(-1, -1, self.image_size, self.image_size)

    @torch.no_grad()
    def consistency_error(self, x_BCHW: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Per-sample ||h(x) - c|| (RMS over the map), or 0/1 class disagreement: the paper's Consistency."""
        hc = self.extract(x_BCHW)
        if self.kind == "class":
            return (hc != c).float()
        return (hc - c).pow(2).flatten(1).mean(1).sqrt()
