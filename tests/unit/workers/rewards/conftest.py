"""Fixtures for reward tests: the tiny reward models, built once per session (a few seconds in all)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.rewards.tiny import TINY_REWARD_MODELS, ensure_tiny_reward_model


@pytest.fixture(scope="session")
def tiny_reward_dirs(tiny_root: Path) -> dict[str, Path]:
    """Reward name -> local directory of its tiny random-init model (``workers.rewards.tiny``)."""
    return {name: ensure_tiny_reward_model(name, tiny_root / "rewards") for name in TINY_REWARD_MODELS}


@pytest.fixture()
def images() -> torch.Tensor:
    """Four seeded 32 x 32 RGB images in [0, 1], [4, 3, 32, 32] (the tiny towers' input size)."""
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


PROMPTS = ["a cat on a sofa", "a red car", "two dogs in the snow", "an astronaut riding a horse"]
