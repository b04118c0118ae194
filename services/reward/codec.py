"""Images on the wire: base64-encoded PNG or JPEG <-> float tensors in [0, 1].

Shape legend:
    B: images in a request
    H, W: image height and width in pixels

The HTTP API carries 8-bit RGB images. Decoding maps a uint8 pixel p to p / 255 (float32), the inverse of
the round(255 x) quantisation every image export (and the JPEG reward) applies, so an image that was
rendered as a float tensor, saved as PNG and decoded here scores exactly as the quantised tensor would.
Every check raises ``RewardInputError`` naming the field (``images[3]``), so the server answers 422 and
never 500 for a bad image.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from services.reward.errors import RewardInputError

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "decode_images",
    "encode_images",
]

ACCEPTED_FORMATS = ("PNG", "JPEG")

# A PNG of a few kB can declare a 100k x 100k canvas; refusing before the pixels are decoded bounds the
# replica's memory per image. 4096^2 is above any text-to-image resolution we train at.
MAX_IMAGE_PIXELS = 4096 * 4096


def encode_images(images_B3HW: Tensor, image_format: str = "PNG") -> list[str]:
    """Base64 strings of ``images_B3HW`` (float in [0, 1]) saved as PNG (lossless at 8 bits) or JPEG (q 95)."""
    if image_format not in ACCEPTED_FORMATS:
        raise ValueError(f"image_format must be one of {ACCEPTED_FORMATS}, got {image_format!r}")
    pixels_BHW3 = (
        (images_B3HW.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    ).numpy()
    encoded = []
    for pixels_HW3 in pixels_BHW3:
        buffer = io.BytesIO()
        extra = {"quality": 95} if image_format == "JPEG" else {}
        Image.fromarray(np.ascontiguousarray(pixels_HW3)).save(buffer, format=image_format, **extra)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def check_image_size(height: int, width: int, expected_HW: tuple[int, int] | None, field: str) -> None:
    """Refuse an image whose size is not the server's configured ``image_size`` (when one is configured)."""
    if expected_HW is not None and (height, width) != tuple(expected_HW):
        raise RewardInputError(
            field,
            f"image is {height}x{width} (height x width) but this server scores {expected_HW[0]}x{expected_HW[1]} "
            "images (its image_size); resize before sending",
        )


def _open_image(data_b64: str, field: str) -> Image.Image:
    """Base64-decode and open (header only; pixels are not decoded yet) one image."""
    if data_b64.startswith("data:"):
        raise RewardInputError(
            field, "send the bare base64 payload, without a 'data:image/...;base64,' prefix"
        )
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RewardInputError(field, f"not valid base64 ({err})") from err
    try:
        image = Image.open(io.BytesIO(raw))
    except Exception as err:  # Pillow raises several types for garbage; all mean "not an image"
        raise RewardInputError(
            field, f"not a decodable PNG or JPEG image ({type(err).__name__}: {err})"
        ) from err
    if image.format not in ACCEPTED_FORMATS:
        raise RewardInputError(field, f"image format {image.format} is not accepted; send PNG or JPEG")
    return image


def decode_images(images_b64: list[str], expected_HW: tuple[int, int] | None) -> Tensor:
    """Decode base64 PNG/JPEG strings into float32 [B, 3, H, W] in [0, 1].

    All images of one request must share one size (they are scored as one tensor); with ``expected_HW`` set
    that size must also be the configured one. Sizes are checked from the image header, before the pixels
    are decoded.
    """
    images_3HW: list[Tensor] = []
    first_HW: tuple[int, int] | None = None
    for index, data_b64 in enumerate(images_b64):
        field = f"images[{index}]"
        image = _open_image(data_b64, field)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise RewardInputError(field, f"image is {height}x{width}, more than {MAX_IMAGE_PIXELS} pixels")
        check_image_size(height, width, expected_HW, field)
        if first_HW is None:
            first_HW = (height, width)
        elif (height, width) != first_HW:
            raise RewardInputError(
                field,
                f"image is {height}x{width} (height x width) but images[0] is {first_HW[0]}x{first_HW[1]}; "
                "all images of one request must have the same size",
            )
        if image.mode != "RGB":
            raise RewardInputError(
                field, f"image mode is {image.mode!r}; send 8-bit RGB (with Pillow: image.convert('RGB'))"
            )
        try:
            pixels_HW3 = np.asarray(image, dtype=np.uint8)  # decodes the pixels; a truncated file fails here
        except Exception as err:
            raise RewardInputError(field, f"image data is corrupt ({type(err).__name__}: {err})") from err
        images_3HW.append(torch.from_numpy(pixels_HW3.copy()).permute(2, 0, 1))
    return torch.stack(images_3HW).float() / 255.0
