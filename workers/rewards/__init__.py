"""Reward functions: images [B, 3, H, W] in [0, 1] + prompts -> float32 scores [B].

Pure rewards live in ``REWARDS`` (JPEG (in)compressibility; ``geneval_rules`` / ``geneval_rules_strict``, the
rule-based compositional evaluator of ``workers.compositional``); model-based ones (CLIPScore, PickScore, HPSv2,
ImageReward, aesthetic, VLM judge) in ``REWARD_BUILDERS`` and are built from :class:`RewardOptions` (local
directories only).
"""

from workers.rewards.errors import RewardError
from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility, jpeg_size_kb
from workers.rewards.options import RewardOptions
from workers.rewards.registry import (
    REWARD_BUILDERS,
    REWARDS,
    MultiReward,
    RewardBreakdown,
    RewardBuilder,
    RewardFn,
    combine_rewards,
    get_reward,
    known_rewards,
)
from workers.rewards.validation import check_images

__all__ = [
    "REWARDS",
    "REWARD_BUILDERS",
    "MultiReward",
    "RewardBreakdown",
    "RewardBuilder",
    "RewardError",
    "RewardFn",
    "RewardOptions",
    "check_images",
    "combine_rewards",
    "get_reward",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "jpeg_size_kb",
    "known_rewards",
]
