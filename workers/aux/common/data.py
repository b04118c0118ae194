"""Offline datasets for the auxiliary experiments: nothing is downloaded.

- scikit-learn's 8x8 handwritten digits (1797 images, shipped inside the package), as tensors in
  [-1, 1], optionally resized, with a fixed train/test split;
- 2-D toys: a Gaussian mixture whose noised densities (and so the exact score) are known in closed
  form, and the checkerboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSplit:
    images: torch.Tensor  # (N, 1, H, W) in [-1, 1]
    labels: torch.Tensor  # (N,) int64 class ids 0..9


def digits(split: str = "train", size: int = 8, test_fraction: float = 0.25, split_seed: int = 0) -> ImageSplit:
    """scikit-learn's digits in [-1, 1] at ``size`` x ``size`` (bilinear resize from 8x8).

    The split is a seeded permutation, the same for every method, so a classifier trained on
    ``train`` is "held out" for samples compared with ``test``.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    n_test = int(round(len(labels) * test_fraction))
    index = {"test": order[:n_test], "train": order[n_test:], "all": order}[split]
    return ImageSplit(images[index].contiguous(), labels[index].contiguous())


@dataclass(frozen=True)
class GaussianMixture2D:
    """An isotropic Gaussian mixture in R^d; under x_t = a x_0 + s eps it stays a mixture (exact score)."""

    means: torch.Tensor  # (M, d)
    std: float
    weights: torch.Tensor  # (M,)

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 2.0, std: float = 0.05, dtype=torch.float64) -> GaussianMixture2D:
        angles = torch.arange(modes, dtype=dtype) * (2 * math.pi / modes)
        means = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1)
        return cls(means, std, torch.full((modes,), 1.0 / modes, dtype=dtype))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        return self.means[comp] + self.std * noise

    def score(self, x: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
        """grad_x log p_t(x) for x_t = alpha x_0 + sigma eps (alpha, sigma scalars or per-row (N,))."""
        alpha = torch.as_tensor(alpha, dtype=x.dtype).reshape(-1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1)
        var = (alpha * self.std) ** 2 + sigma**2  # (N|1, 1, 1)
        diff = alpha * self.means.to(x.dtype).unsqueeze(0) - x.unsqueeze(1)  # (N, M, d)
        logits = torch.log(self.weights.to(x.dtype)) - (diff**2).sum(-1) / (2 * var[..., 0])
        resp = torch.softmax(logits, dim=1).unsqueeze(-1)
        return (resp * diff / var).sum(1)

    def eps(self, x: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
        """The exact noise prediction: eps = -sigma * score."""
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        return -sigma_t * self.score(x, alpha, sigma)


def checkerboard_2d(n: int, generator: torch.Generator, cells: int = 4, extent: float = 2.0) -> torch.Tensor:
    """Uniform samples from the dark squares of a ``cells`` x ``cells`` board on [-extent, extent]^2."""
    side = 2 * extent / cells
    if cells % 2:
        raise ValueError(f"cells must be even, got {cells}")
    i = torch.randint(0, cells, (n,), generator=generator)
    j = 2 * torch.randint(0, cells // 2, (n,), generator=generator) + (i % 2)  # only cells with i + j even
    ij = torch.stack([i, j], dim=1)
    offset = torch.rand(n, 2, generator=generator)
    return -extent + (ij.to(torch.float32) + offset) * side
