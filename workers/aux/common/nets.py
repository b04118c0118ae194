"""Small networks shared by the auxiliary methods (real diffusers classes where one fits)."""

from __future__ import annotations

import math

import torch
from torch import nn


def small_unet(sample_size: int, in_channels: int = 1, out_channels: int | None = None,
               channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1, attention: bool = False):
    """A diffusers ``UNet2DModel`` sized for 8-32 px images (the real class, so its loaders apply)."""
    from diffusers import UNet2DModel

    down = ["DownBlock2D"] * len(channels)
    up = ["UpBlock2D"] * len(channels)
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels or in_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                       down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=min(8, channels[0]), attention_head_dim=8)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style embedding of a (N,) float time into (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeMLP(nn.Module):
    """A denoiser for low-dimensional toys: MLP on [x, embed(t) (, condition)]."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 32, cond_dim: int = 0) -> None:
        super().__init__()
        self.time_dim = time_dim
        layers: list[nn.Module] = []
        width = dim + time_dim + cond_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x, sinusoidal_embedding(t.reshape(-1).expand(x.shape[0]) * 1000.0, self.time_dim)]
        if cond is not None:
            parts.append(cond)
        return self.net(torch.cat(parts, dim=1))


class SmallClassifier(nn.Module):
    """A small CNN for 1-channel 8-32 px images; its penultimate layer is the feature space of FID-like metrics."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width * 2, width * 2, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(width * 8, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
