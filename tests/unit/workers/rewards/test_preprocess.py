"""Tensor image preprocessing against independent references (transformers' PIL CLIP processor, PIL itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from workers.rewards.hpsv2 import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from workers.rewards.preprocess import ImagePreprocess, preprocess_images

MEAN = np.array(OPENAI_CLIP_MEAN).reshape(3, 1, 1)
STD = np.array(OPENAI_CLIP_STD).reshape(3, 1, 1)
# PIL resizes uint8 images with fixed-point coefficients and rounds its output to uint8, so single pixels
# differ by up to ~1.2 grey levels and the mean error is ~0.3 levels (rounding alone averages 0.25). The
# mean bound discriminates: torch bilinear gives ~3.9 levels and bicubic without antialiasing ~0.9.
LEVEL = 1 / 255 / min(OPENAI_CLIP_STD)  # one grey level after normalisation
PIL_ATOL = 1.5 * LEVEL
PIL_MEAN_ATOL = 0.35 * LEVEL


def _uint8_images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Images on the 1/255 grid, so PIL sees exactly the same input as the tensor path."""
    gen = torch.Generator().manual_seed(seed)
    # Smooth-ish content (upsampled noise) like real images; pure noise is the worst case for resampling.
    low = torch.rand(batch, 3, max(2, height // 4), max(2, width // 4), generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth * 255).round() / 255


@pytest.mark.parametrize(("height", "width", "size"), [(64, 64, 32), (48, 80, 32), (90, 40, 24), (20, 28, 32)])
def test_crop_matches_clip_image_processor(height: int, width: int, size: int) -> None:
    images = _uint8_images(2, height, width, seed=height + width)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
    )
    pils = [Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for img in images]
    expected = torch.as_tensor(np.asarray(processor(images=pils, return_tensors="np")["pixel_values"]))
    got = preprocess_images(images, ImagePreprocess(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "crop"))
    assert got.shape == (2, 3, size, size) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), atol=PIL_ATOL, rtol=0)
    assert (got - expected).abs().mean() < PIL_MEAN_ATOL


def _pil_pad_reference(image_3HW: torch.Tensor, size: int) -> np.ndarray:
    """open_clip ResizeMaxSize done with PIL: longer side to ``size`` (bicubic), centred on black, then normalised."""
    array = (image_3HW.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    height, width = array.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    resized = Image.fromarray(array).resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return (np.asarray(canvas, dtype=np.float64).transpose(2, 0, 1) / 255.0 - MEAN) / STD


@pytest.mark.parametrize(("height", "width"), [(48, 80), (80, 48), (64, 64), (17, 33)])
def test_pad_matches_pil_resize_max_size(height: int, width: int) -> None:
    images = _uint8_images(2, height, width, seed=7)
    got = preprocess_images(images, ImagePreprocess(32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "pad"))
    expected = torch.as_tensor(np.stack([_pil_pad_reference(img, 32) for img in images])).float()
    torch.testing.assert_close(got, expected, atol=PIL_ATOL, rtol=0)
    assert (got - expected).abs().mean() < PIL_MEAN_ATOL
    if height != width:  # the padded band is black before normalisation
        band = got[:, :, :2, :] if height < width else got[:, :, :, :2]
        black = torch.as_tensor((0 - MEAN) / STD).float().view(1, 3, 1, 1)
        torch.testing.assert_close(band, black.expand_as(band))


def test_matching_size_is_normalisation_only() -> None:
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for geometry in ("crop", "pad"):
        got = preprocess_images(images, ImagePreprocess(32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, geometry))
        expected = (images.double() - torch.as_tensor(MEAN)) / torch.as_tensor(STD)
        torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)


def test_bf16_input_is_processed_in_float32() -> None:
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    spec = ImagePreprocess(32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    got = preprocess_images(images.bfloat16(), spec)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, preprocess_images(images.bfloat16().float(), spec))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size"),
        ({"std": (1.0, 0.0, 1.0)}, "positive"),
        ({"mean": (0.5, 0.5)}, "3 means"),
        ({"geometry": "stretch"}, "geometry"),
    ],
)
def test_invalid_spec(kwargs: dict, match: str) -> None:
    base = {"size": 32, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}
    with pytest.raises(ValueError, match=match):
        ImagePreprocess(**{**base, **kwargs})
