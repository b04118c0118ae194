"""Prompt sets and their deterministic order: train/held-out split and the per-iteration batch.

The order of prompts is a pure function of (run seed, iteration), so a resumed run sees exactly
the prompts an uninterrupted one would have seen.

Sources: ``builtin:shapes`` and text files get a seeded random held-out split of ``heldout_count``
prompts. ``builtin:compositional`` (the compositional benchmark, ``workers.compositional``) has a fixed
split of its own: every train caption trains, each of the six categories weighing the same (a caption
of a small category appears several times in ``train_ids``, so once per epoch each), and
``heldout_count`` captions taken round-robin over the categories of its held-out split (unseen caption
combinations) are evaluated; the rest of the held-out split is never used by a run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.compositional.captions import parse_caption, split_captions, stratified

BUILTIN_SOURCES = ("builtin:shapes", "builtin:compositional")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "cube", "ball")
COUNTS = ("a", "two", "three", "four")
RELATIONS = ("left of", "right of", "above", "below")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def builtin_shapes() -> list[str]:
    """Procedural captions: counted coloured objects and pairs in spatial relations."""
    singles = [
        f"{_a(c) if n == 'a' else n} {c} {s}{'' if n == 'a' else 's'}"
        for n, c, s in itertools.product(COUNTS, COLOURS, SHAPES)
    ]
    pairs = [
        f"{_a(c1)} {c1} {s1} {rel} {_a(c2)} {c2} {s2}"
        for (c1, s1), rel, (c2, s2) in itertools.product(
            itertools.product(COLOURS[:4], SHAPES[:3]), RELATIONS, itertools.product(COLOURS[4:], SHAPES[3:])
        )
    ]
    return singles + pairs


@dataclass(frozen=True)
class PromptSet:
    """All prompts of a job with a fixed held-out split; ids are indices into ``prompts``.

    ``train_ids`` may repeat an id (category balancing of ``builtin:compositional``): an epoch visits each
    entry once.
    """

    prompts: tuple[str, ...]
    train_ids: tuple[int, ...]
    heldout_ids: tuple[int, ...]
    categories: tuple[str, ...] | None = None  # one per prompt where the set has categories (GenEval-style)

    def batch(self, run_seed: int, iteration: int, size: int) -> list[int]:
        """Train prompt ids for ``iteration``: epoch-wise shuffles seeded by (run_seed, epoch)."""
        n = len(self.train_ids)
        start = iteration * size
        ids: list[int] = []
        for pos in range(start, start + size):
            epoch, offset = divmod(pos, n)
            order = np.random.default_rng([run_seed, epoch]).permutation(n)
            ids.append(self.train_ids[int(order[offset])])
        return ids


def compositional_prompt_set(heldout_count: int, split_seed: int = 0) -> PromptSet:
    """The compositional benchmark: all its train captions, and ``heldout_count`` held-out ones (stratified)."""
    split = split_captions(split_seed)
    if heldout_count > len(split.heldout):
        raise ValueError(
            f"prompts.heldout_count ({heldout_count}) exceeds the {len(split.heldout)} held-out captions of "
            "builtin:compositional; lower it"
        )
    evaluated = set(stratified(split.heldout, heldout_count, split_seed))
    prompts = split.train + tuple(c for c in split.heldout if c in evaluated)
    by_category: dict[str, list[int]] = {}
    for pid, text in enumerate(split.train):
        by_category.setdefault(parse_caption(text).category, []).append(pid)
    largest = max(len(ids) for ids in by_category.values())
    # Each category weighs the same in training (GenEval's score is the mean over categories): a caption
    # of a small category appears round(largest / size) times per epoch.
    train_ids = tuple(sorted(pid for ids in by_category.values() for pid in ids
                             for _ in range(max(1, round(largest / len(ids))))))
    categories = tuple(parse_caption(text).category for text in prompts)
    return PromptSet(prompts, train_ids, tuple(range(len(split.train), len(prompts))), categories)


def load_prompt_set(source: str, heldout_count: int, split_seed: int = 0) -> PromptSet:
    if source == "builtin:compositional":
        return compositional_prompt_set(heldout_count, split_seed)
    if source == "builtin:shapes":
        prompts = builtin_shapes()
    else:
        lines = Path(source).expanduser().read_text().splitlines()
        prompts = [line.strip() for line in lines if line.strip()]
    if len(prompts) <= heldout_count:
        raise ValueError(
            f"prompts.source {source!r} has {len(prompts)} prompts; need more than prompts.heldout_count "
            f"({heldout_count}) so some remain for training"
        )
    order = np.random.default_rng(split_seed).permutation(len(prompts))
    heldout = tuple(sorted(int(i) for i in order[:heldout_count]))
    train = tuple(sorted(int(i) for i in order[heldout_count:]))
    return PromptSet(tuple(prompts), train, heldout)
