"""The two discrete data sets of aux.vadd: the tokenised checkerboard and scikit-learn digits as 17-level tokens."""

from __future__ import annotations

import torch

from workers.aux.common.data import checkerboard_2d, digits

EXTENT = 2.0  # checkerboard_2d's square is [-2, 2]^2
DIGIT_LEVELS = 17  # scikit-learn digits are integers 0..16


def checkerboard_tokens(n: int, generator: torch.Generator, bins: int, cells: int) -> torch.Tensor:
    """[n, 2] bin indices (x, y) of checkerboard samples: 2 tokens over a vocabulary of ``bins``."""
    xy = checkerboard_2d(n, generator, cells=cells, extent=EXTENT)
    return ((xy + EXTENT) / (2 * EXTENT) * bins).long().clamp(0, bins - 1)


def checkerboard_histogram(bins: int, cells: int) -> torch.Tensor:
    """The exact [bins, bins] distribution of ``checkerboard_tokens`` (uniform over the dark cells' bins)."""
    per_cell = bins // cells
    cell = torch.arange(bins) // per_cell
    dark = ((cell[:, None] + cell[None, :]) % 2 == 0).double()
    return dark / dark.sum()


def token_histogram(tokens: torch.Tensor, bins: int) -> torch.Tensor:
    """[bins, bins] counts of 2-token samples."""
    flat = tokens[:, 0] * bins + tokens[:, 1]
    return torch.bincount(flat, minlength=bins * bins).reshape(bins, bins).double()


def digits_tokens(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N, 64] in 0..16, labels [N]) of a fixed split of scikit-learn digits (common.data.digits)."""
    data = digits(split, size=8)
    tokens = ((data.images + 1.0) * (DIGIT_LEVELS - 1) / 2.0).round().long().flatten(1)
    return tokens, data.labels


def tokens_to_images(tokens: torch.Tensor) -> torch.Tensor:
    """Digit tokens [N, 64] back to images [N, 1, 8, 8] in [-1, 1]."""
    return (tokens.float() / (DIGIT_LEVELS - 1) * 2.0 - 1.0).reshape(-1, 1, 8, 8)
