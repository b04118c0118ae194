"""JPEG (in)compressibility rewards and image validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility


def _flat_and_noise(size: int = 64) -> torch.Tensor:
    flat = torch.full((3, size, size), 0.5)
    noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.stack([flat, noise])


def _pil_size_kb(image_3HW: torch.Tensor) -> float:
    """Independent reference: write the uint8 image with Pillow at quality 95 and measure it."""
    array = np.clip(np.rint(image_3HW.double().numpy() * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000.0


def test_flat_is_more_compressible_than_noise() -> None:
    images = _flat_and_noise()
    compress = jpeg_compressibility(images, ["a", "b"])
    incompress = jpeg_incompressibility(images, ["a", "b"])
    assert compress.dtype == torch.float32 and compress.shape == (2,)
    assert compress[0] > compress[1]
    assert incompress[1] > incompress[0]
    assert (compress < 0).all()
    torch.testing.assert_close(incompress, -compress)


def test_values_are_kilobytes_at_quality_95() -> None:
    images = _flat_and_noise(32)
    got = jpeg_incompressibility(images, ["a", "b"])
    expected = torch.tensor([_pil_size_kb(img) for img in images], dtype=torch.float32)
    torch.testing.assert_close(got, expected)
    # 32x32 RGB noise at quality 95 is a few kB, not bytes or MB.
    assert 0.5 < got[1].item() < 20.0


def test_non_square_and_bf16_images() -> None:
    images = torch.rand(3, 3, 16, 40, generator=torch.Generator().manual_seed(1)).bfloat16()
    assert jpeg_compressibility(images, ["x", "y", "z"]).shape == (3,)


@pytest.mark.parametrize(
    ("images", "prompts", "match"),
    [
        (torch.rand(3, 8, 8), ["a"], "4 dims"),
        (torch.rand(1, 1, 8, 8), ["a"], "3 .RGB. channels"),
        (torch.rand(1, 8, 8, 3), ["a"], "3 .RGB. channels"),
        (torch.rand(2, 3, 8, 8) * 255, ["a", "b"], r"\[0, 1\]"),
        (torch.rand(2, 3, 8, 8) * 2 - 1, ["a", "b"], r"\[0, 1\]"),
        (torch.full((1, 3, 8, 8), float("nan")), ["a"], "NaN"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), ["a"], "floating point"),
        (torch.rand(2, 3, 8, 8), ["a"], "2 images but 1 prompts"),
        (torch.rand(1, 3, 8, 8), "a", "list"),
    ],
)
def test_validation_errors(images: torch.Tensor, prompts, match: str) -> None:
    for fn in (jpeg_compressibility, jpeg_incompressibility):
        with pytest.raises(ValueError, match=match):
            fn(images, prompts)


def test_tiny_overshoot_is_tolerated() -> None:
    images = torch.full((1, 3, 8, 8), 1.0 + 5e-4)
    images[0, 0, 0, 0] = -5e-4
    assert torch.isfinite(jpeg_compressibility(images, ["a"])).all()
