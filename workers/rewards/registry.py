"""The flat table of reward functions and their weighted combination.

Shape legend:
    B: images in the batch

A reward function maps (images [B, 3, H, W] float in [0, 1], prompts list[str] of length B) to a float32
tensor [B]. ``REWARDS`` is filled by explicit imports below (no decorators, no import side effects); add a
reward by importing it here and adding one line.

Multi-reward training uses reward-level aggregation, R = sum_k w_k R_k (as flow_grpo's ``multi_score``);
the components are returned as well so the pipeline can log each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility
from workers.rewards.validation import check_images

__all__ = ["REWARDS", "MultiReward", "RewardBreakdown", "RewardFn", "combine_rewards", "get_reward"]

RewardFn = Callable[[Tensor, list[str]], Tensor]

REWARDS: dict[str, RewardFn] = {
    "jpeg_compressibility": jpeg_compressibility,
    "jpeg_incompressibility": jpeg_incompressibility,
}


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; KeyError listing the valid names otherwise."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; valid rewards: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


@dataclass(frozen=True)
class RewardBreakdown:
    """Output of :class:`MultiReward`.

    Attributes:
        total: weighted sum sum_k w_k R_k, float32 [B].
        components: unweighted R_k per reward name, each float32 [B].
    """

    total: Tensor
    components: dict[str, Tensor]


class MultiReward:
    """Weighted sum of registered rewards, R = sum_k w_k R_k.

    Args:
        weights: reward name -> weight. Must be non-empty, every name registered in ``REWARDS``, every
            weight finite, and the weights must sum to > 0 (a single negative weight is allowed, e.g. to
            penalise a term, but the combination must still reward something).
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        if len(weights) == 0:
            raise ValueError(f"reward weights are empty; name at least one of: {', '.join(sorted(REWARDS))}")
        unknown = sorted(name for name in weights if name not in REWARDS)
        if unknown:
            raise ValueError(f"unknown reward name(s) {unknown}; valid rewards: {', '.join(sorted(REWARDS))}")
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"weight of reward {name!r} must be a finite number, got {weight!r}")
        total_weight = sum(float(w) for w in weights.values())
        if total_weight <= 0.0:
            raise ValueError(f"reward weights must sum to > 0, got sum {total_weight} for {dict(weights)}")
        self.weights: dict[str, float] = {name: float(weight) for name, weight in weights.items()}
        self._fns: dict[str, RewardFn] = {name: REWARDS[name] for name in self.weights}

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> RewardBreakdown:
        check_images(images_B3HW, prompts)
        batch = images_B3HW.shape[0]
        components: dict[str, Tensor] = {}
        total = torch.zeros(batch, dtype=torch.float32, device=images_B3HW.device)
        for name, fn in self._fns.items():
            scores = fn(images_B3HW, prompts)
            if scores.shape != (batch,):
                raise ValueError(
                    f"reward {name!r} returned shape {tuple(scores.shape)}, expected [B={batch}]"
                )
            scores = scores.to(device=total.device, dtype=torch.float32)
            components[name] = scores
            total = total + self.weights[name] * scores
        return RewardBreakdown(total=total, components=components)

    def __repr__(self) -> str:
        return f"MultiReward({self.weights!r})"


def combine_rewards(weights: Mapping[str, float]) -> MultiReward:
    """A callable (images, prompts) -> :class:`RewardBreakdown` computing sum_k w_k R_k; see :class:`MultiReward`."""
    return MultiReward(weights)
