"""Reward functions: images [B, 3, H, W] in [0, 1] + prompts -> float32 scores [B]."""

from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility, jpeg_size_kb
from workers.rewards.registry import (
    REWARDS,
    MultiReward,
    RewardBreakdown,
    RewardFn,
    combine_rewards,
    get_reward,
)
from workers.rewards.validation import check_images

__all__ = [
    "REWARDS",
    "MultiReward",
    "RewardBreakdown",
    "RewardFn",
    "check_images",
    "combine_rewards",
    "get_reward",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "jpeg_size_kb",
]
