"""The flat tables of reward functions and their weighted combination.

Shape legend:
    B: images in the batch

A reward function maps (images [B, 3, H, W] float in [0, 1], prompts list[str] of length B) to a float32
tensor [B]. Two flat tables, both filled by explicit imports below (no decorators, no import side effects):

* ``REWARDS``: pure rewards, plain functions usable as they are (JPEG (in)compressibility, the rule-based
  compositional evaluator ``geneval_rules`` / ``geneval_rules_strict``).
* ``REWARD_BUILDERS``: model-based rewards, ``builder(RewardOptions) -> RewardFn``. A builder loads its model
  once from a local directory onto ``options.device`` (eval mode, frozen) and returns a callable with the same
  signature as a pure reward, which runs under ``torch.no_grad`` in chunks of ``options.batch_size`` (not
  ``inference_mode``: its outputs would reject the caller's in-place ops, e.g. ``rewards -= baseline``).

A name is in exactly one table; :func:`known_rewards` is their union, for config validation. Add a reward by
importing it here and adding one line to the right table.

Multi-reward training uses reward-level aggregation, R = sum_k w_k R_k (as flow_grpo's ``multi_score``);
the components are returned as well so the pipeline can log each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from workers.compositional.evaluator import geneval_rules, geneval_rules_strict
from workers.rewards.aesthetic import build_aesthetic
from workers.rewards.clip import build_clipscore, build_pickscore
from workers.rewards.hpsv2 import build_hpsv2
from workers.rewards.imagereward import build_imagereward
from workers.rewards.jpeg import jpeg_compressibility, jpeg_incompressibility
from workers.rewards.options import RewardOptions
from workers.rewards.validation import check_images
from workers.rewards.vlm_judge import build_vlm_judge

__all__ = [
    "REWARDS",
    "REWARD_BUILDERS",
    "MultiReward",
    "RewardBreakdown",
    "RewardBuilder",
    "RewardFn",
    "combine_rewards",
    "get_reward",
    "known_rewards",
]

RewardFn = Callable[[Tensor, list[str]], Tensor]
RewardBuilder = Callable[[RewardOptions], RewardFn]

REWARDS: dict[str, RewardFn] = {
    "geneval_rules": geneval_rules,  # rule-based compositional evaluator, partial credit (workers.compositional)
    "geneval_rules_strict": geneval_rules_strict,  # the same, GenEval's all-or-nothing per-image correctness
    "jpeg_compressibility": jpeg_compressibility,
    "jpeg_incompressibility": jpeg_incompressibility,
}

REWARD_BUILDERS: dict[str, RewardBuilder] = {
    "aesthetic": build_aesthetic,
    "clipscore": build_clipscore,
    "hpsv2": build_hpsv2,
    "imagereward": build_imagereward,
    "pickscore": build_pickscore,
    "vlm_judge": build_vlm_judge,
}


def known_rewards() -> set[str]:
    """Every valid reward name: pure (``REWARDS``) and model-based (``REWARD_BUILDERS``)."""
    return set(REWARDS) | set(REWARD_BUILDERS)


def _valid_names() -> str:
    return (
        f"pure rewards: {', '.join(sorted(REWARDS))}; "
        f"model-based rewards (need RewardOptions): {', '.join(sorted(REWARD_BUILDERS))}"
    )


def get_reward(name: str, options: RewardOptions | None = None) -> RewardFn:
    """The reward ``name``: a pure function as registered, or a model-based reward built from ``options``.

    Raises KeyError listing every valid name for an unknown name; ValueError if a model-based reward gets no
    options or a pure one gets some.
    """
    if name in REWARDS:
        if options is not None:
            raise ValueError(f"reward {name!r} is pure and takes no RewardOptions; pass options=None")
        return REWARDS[name]
    if name in REWARD_BUILDERS:
        if options is None:
            raise ValueError(
                f"reward {name!r} is model-based and needs RewardOptions (at least path= for model rewards, "
                "extra= for vlm_judge)"
            )
        return REWARD_BUILDERS[name](options)
    raise KeyError(f"unknown reward {name!r}; {_valid_names()}")


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
        weights: reward name -> weight. Must be non-empty, every name in ``REWARDS`` or ``REWARD_BUILDERS``,
            every weight finite, and the weights must sum to > 0 (a single negative weight is allowed, e.g. to
            penalise a term, but the combination must still reward something).
        options: model-based reward name -> its :class:`RewardOptions`. Required for every model-based name in
            ``weights`` and only for those. Each model reward is built here, once: models are loaded onto their
            device when the MultiReward is constructed, not per call.
    """

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, RewardOptions] | None = None) -> None:
        options = {} if options is None else dict(options)
        if len(weights) == 0:
            raise ValueError(f"reward weights are empty; name at least one reward. Valid: {_valid_names()}")
        unknown = sorted(name for name in weights if name not in REWARDS and name not in REWARD_BUILDERS)
        if unknown:
            raise ValueError(f"unknown reward name(s) {unknown}; valid: {_valid_names()}")
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"weight of reward {name!r} must be a finite number, got {weight!r}")
        total_weight = sum(float(w) for w in weights.values())
        if total_weight <= 0.0:
            raise ValueError(f"reward weights must sum to > 0, got sum {total_weight} for {dict(weights)}")
        _check_options(weights, options)
        self.weights: dict[str, float] = {name: float(weight) for name, weight in weights.items()}
        self.options: dict[str, RewardOptions] = options
        # Build only after every check passed, so a typo does not cost a model load first.
        self._fns: dict[str, RewardFn] = {
            name: REWARDS[name] if name in REWARDS else REWARD_BUILDERS[name](options[name]) for name in self.weights
        }

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


def _check_options(weights: Mapping[str, float], options: Mapping[str, RewardOptions]) -> None:
    """Every model-based reward in ``weights`` has options; no option is for a pure or absent reward."""
    for name, opts in options.items():
        if not isinstance(opts, RewardOptions):
            raise ValueError(f"options[{name!r}] must be a RewardOptions, got {type(opts).__name__}")
    needing = sorted(name for name in weights if name in REWARD_BUILDERS and name not in options)
    if needing:
        raise ValueError(
            f"model-based reward(s) {needing} need options, e.g. options={{{needing[0]!r}: RewardOptions(path=...)}}"
        )
    pure = sorted(name for name in options if name in REWARDS)
    if pure:
        raise ValueError(f"reward(s) {pure} are pure and take no options; remove them from options")
    unused = sorted(name for name in options if name not in weights)
    if unused:
        raise ValueError(f"options given for reward(s) {unused} that have no weight; weights name {sorted(weights)}")


def combine_rewards(weights: Mapping[str, float], options: Mapping[str, RewardOptions] | None = None) -> MultiReward:
    """A callable (images, prompts) -> :class:`RewardBreakdown` computing sum_k w_k R_k; see :class:`MultiReward`."""
    return MultiReward(weights, options)
