"""The reward table, lookup errors and weighted combination."""

from __future__ import annotations

import math

import pytest
import torch

from workers.rewards import REWARDS, combine_rewards, get_reward
from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility


def _images() -> torch.Tensor:
    flat = torch.full((3, 32, 32), 0.25)
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.stack([flat, noise])


def test_lookup() -> None:
    assert get_reward("jpeg_compressibility") is jpeg_compressibility
    assert get_reward("jpeg_incompressibility") is jpeg_incompressibility
    assert set(REWARDS) >= {"jpeg_compressibility", "jpeg_incompressibility"}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="jpeg_compressibility") as info:
        get_reward("pickscore_v9")
    assert "pickscore_v9" in str(info.value)


def test_combined_is_weighted_sum_with_components() -> None:
    images = _images()
    prompts = ["a", "b"]
    combined = combine_rewards({"jpeg_compressibility": 2.0, "jpeg_incompressibility": 0.5})
    out = combined(images, prompts)
    size_kb = jpeg_incompressibility(images, prompts).double()
    # 2 * (-size) + 0.5 * size = -1.5 * size
    torch.testing.assert_close(out.total.double(), -1.5 * size_kb, rtol=1e-6, atol=1e-6)
    assert out.total.dtype == torch.float32 and out.total.shape == (2,)
    assert set(out.components) == {"jpeg_compressibility", "jpeg_incompressibility"}
    torch.testing.assert_close(out.components["jpeg_compressibility"], -size_kb.float())
    torch.testing.assert_close(out.components["jpeg_incompressibility"], size_kb.float())
    assert combined.weights == {"jpeg_compressibility": 2.0, "jpeg_incompressibility": 0.5}


def test_single_reward_with_integer_weight() -> None:
    images = _images()
    out = combine_rewards({"jpeg_compressibility": 1})(images, ["a", "b"])
    torch.testing.assert_close(out.total, jpeg_compressibility(images, ["a", "b"]))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({}, "empty"),
        ({"nope": 1.0}, "unknown reward name.*nope.*jpeg_compressibility"),
        ({"jpeg_compressibility": math.nan}, "finite"),
        ({"jpeg_compressibility": math.inf}, "finite"),
        ({"jpeg_compressibility": "1"}, "finite"),
        ({"jpeg_compressibility": 0.0}, "sum to > 0"),
        ({"jpeg_compressibility": 1.0, "jpeg_incompressibility": -2.0}, "sum to > 0"),
    ],
)
def test_combine_validation(weights: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        combine_rewards(weights)


def test_negative_weight_allowed_when_sum_positive() -> None:
    combined = combine_rewards({"jpeg_compressibility": 2.0, "jpeg_incompressibility": -1.0})
    out = combined(_images(), ["a", "b"])
    torch.testing.assert_close(out.total, 3.0 * out.components["jpeg_compressibility"])


def test_combined_validates_images() -> None:
    combined = combine_rewards({"jpeg_compressibility": 1.0})
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        combined(_images(), ["a", "b", "c"])
