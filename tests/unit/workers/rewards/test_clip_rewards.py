"""CLIPScore, PickScore and HPSv2 on tiny random-init local models: contract, determinism, prompt dependence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.unit.workers.rewards.conftest import PROMPTS
from workers.rewards import RewardOptions, get_reward

CLIP_REWARDS = ("clipscore", "pickscore", "hpsv2")


@pytest.mark.parametrize("name", CLIP_REWARDS)
def test_shape_dtype_finite_deterministic(name: str, tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    reward = get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))
    first = reward(images, PROMPTS)
    assert first.shape == (4,) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    torch.testing.assert_close(reward(images, PROMPTS), first, rtol=0, atol=0)
    # A second build from the same directory gives the same scores (no hidden randomness at load).
    torch.testing.assert_close(get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))(images, PROMPTS), first)


@pytest.mark.parametrize("name", CLIP_REWARDS)
def test_batch_invariant(name: str, tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    path = str(tiny_reward_dirs[name])
    full = get_reward(name, RewardOptions(path=path, batch_size=16))(images, PROMPTS)
    chunked = get_reward(name, RewardOptions(path=path, batch_size=3))(images, PROMPTS)
    singles = torch.cat([get_reward(name, RewardOptions(path=path))(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(singles, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CLIP_REWARDS)
def test_responds_to_prompt_and_image(name: str, tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    reward = get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))
    same_image = images[:1].expand(4, -1, -1, -1)
    by_prompt = reward(same_image, PROMPTS)
    assert (by_prompt.max() - by_prompt.min()) > 1e-3, by_prompt
    by_image = reward(images, [PROMPTS[0]] * 4)
    assert (by_image.max() - by_image.min()) > 1e-3, by_image


@pytest.mark.parametrize("name", ("clipscore", "hpsv2"))
def test_cosine_rewards_are_cosines(name: str, tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    scores = get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))(images, PROMPTS)
    assert (scores.abs() <= 1.0 + 1e-6).all()


def test_pickscore_is_logit_scale_times_cosine(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    """PickScore and CLIPScore differ only by exp(logit_scale) when pointed at the same CLIP directory."""
    from safetensors.torch import load_file

    path = str(tiny_reward_dirs["pickscore"])
    logit_scale = float(load_file(str(Path(path) / "model.safetensors"))["logit_scale"])
    pick = get_reward("pickscore", RewardOptions(path=path))(images, PROMPTS)
    cosine = get_reward("clipscore", RewardOptions(path=path))(images, PROMPTS)
    torch.testing.assert_close(pick, math.exp(logit_scale) * cosine, rtol=1e-5, atol=1e-6)


def test_non_square_and_bf16_input(tiny_reward_dirs: dict[str, Path]) -> None:
    images = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(3))
    for name in CLIP_REWARDS:
        reward = get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))
        scores = reward(images.bfloat16(), PROMPTS[:2])
        assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_long_prompt_is_truncated(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    reward = get_reward("clipscore", RewardOptions(path=str(tiny_reward_dirs["clipscore"])))
    long = "a very long prompt " * 20  # far beyond the tiny 40-token context
    assert torch.isfinite(reward(images[:2], [long, "x"])).all()


def test_input_validation_runs_first(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    reward = get_reward("clipscore", RewardOptions(path=str(tiny_reward_dirs["clipscore"])))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reward(images * 255, PROMPTS)
    with pytest.raises(ValueError, match="4 images but 3 prompts"):
        reward(images, PROMPTS[:3])
