"""The caption grammar: templates per GenEval category, the parser, every caption and the split.

Grammar (every caption of the world is one of these; the parser accepts exactly this language)::

    caption  := mention | mention " and " mention | mention " " relation " " mention
    mention  := count [colour " "] shape        count "a" takes the singular, two/three/four the plural
    relation := "left of" | "right of" | "above" | "below"

Templates, with GenEval's category names:

    single_object  "a circle"
    colors         "a red circle"
    counting       "three circles"
    two_object     "a circle and a square"                (two different shapes)
    position       "a circle left of a square"            (A is left of B; two different shapes)
    color_attr     "a red circle and a blue square"       (different shapes, different colours)

The held-out split holds out whole captions (unseen combinations of words that all occur in
training): a seeded ``heldout_fraction`` of each category, at least one per category.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from workers.compositional.vocabulary import CATEGORIES, COLOURS, COUNT_WORDS, PLURALS, RELATIONS, SHAPES

_COUNT_OF_WORD = {word: n for n, word in COUNT_WORDS.items()}
_SHAPE_OF_PLURAL = {plural: shape for shape, plural in PLURALS.items()}


class CaptionError(ValueError):
    """A caption outside the compositional grammar."""


@dataclass(frozen=True)
class Mention:
    """One noun phrase: ``count`` objects of ``shape``, all of ``colour`` when it is given."""

    shape: str
    colour: str | None = None
    count: int = 1

    def text(self) -> str:
        noun = self.shape if self.count == 1 else PLURALS[self.shape]
        words = [COUNT_WORDS[self.count], *([self.colour] if self.colour else []), noun]
        return " ".join(words)


@dataclass(frozen=True)
class Caption:
    """A parsed caption: one or two mentions and, for position captions, the relation of the first to the second."""

    mentions: tuple[Mention, ...]
    relation: str | None = None

    @property
    def category(self) -> str:
        first = self.mentions[0]
        if len(self.mentions) == 1:
            if first.count > 1:
                return "counting"
            return "colors" if first.colour else "single_object"
        if self.relation is not None:
            return "position"
        return "color_attr" if any(m.colour for m in self.mentions) else "two_object"

    def text(self) -> str:
        if len(self.mentions) == 1:
            return self.mentions[0].text()
        joint = f" {self.relation} " if self.relation else " and "
        return joint.join(m.text() for m in self.mentions)


def format_caption(caption: Caption) -> str:
    return caption.text()


def _parse_mention(text: str, caption: str) -> Mention:
    words = text.split(" ")
    if len(words) not in (2, 3) or words[0] not in _COUNT_OF_WORD:
        raise CaptionError(
            f"{caption!r}: {text!r} is not a mention; expected '<a|two|three|four> [colour] <shape>' with a colour "
            f"in {list(COLOURS)} and a shape in {list(SHAPES)} (plural after two/three/four)"
        )
    count = _COUNT_OF_WORD[words[0]]
    colour = words[1] if len(words) == 3 else None
    noun = words[-1]
    if colour is not None and colour not in COLOURS:
        raise CaptionError(f"{caption!r}: unknown colour {colour!r}; valid: {list(COLOURS)}")
    shape = noun if count == 1 else _SHAPE_OF_PLURAL.get(noun)
    if shape not in SHAPES:
        form = "singular" if count == 1 else "plural"
        raise CaptionError(f"{caption!r}: {noun!r} is not a {form} shape; shapes: {list(SHAPES)}")
    return Mention(shape, colour, count)


def parse_caption(text: str) -> Caption:
    """The :class:`Caption` of ``text``; raises :class:`CaptionError` naming what does not fit the grammar."""
    if not isinstance(text, str):
        raise CaptionError(f"a caption must be a string, got {type(text).__name__}")
    caption = " ".join(text.strip().lower().split())
    for relation in RELATIONS:
        left, sep, right = caption.partition(f" {relation} ")
        if sep:
            return Caption((_parse_mention(left, text), _parse_mention(right, text)), relation)
    left, sep, right = caption.partition(" and ")
    if sep:
        return Caption((_parse_mention(left, text), _parse_mention(right, text)))
    return Caption((_parse_mention(caption, text),))


def captions_by_category() -> dict[str, list[Caption]]:
    """Every caption of the world per category, in a fixed order."""
    pairs = [(a, b) for a, b in itertools.permutations(SHAPES, 2)]
    return {
        "single_object": [Caption((Mention(s),)) for s in SHAPES],
        "two_object": [Caption((Mention(a), Mention(b))) for a, b in pairs],
        "counting": [Caption((Mention(s, None, n),)) for n in (2, 3, 4) for s in SHAPES],
        "colors": [Caption((Mention(s, c),)) for c in COLOURS for s in SHAPES],
        "position": [Caption((Mention(a), Mention(b)), r) for r in RELATIONS for a, b in pairs],
        "color_attr": [
            Caption((Mention(a, ca), Mention(b, cb)))
            for (a, b), (ca, cb) in itertools.product(pairs, itertools.permutations(COLOURS, 2))
        ],
    }


@dataclass(frozen=True)
class CaptionSplit:
    """Train and held-out captions (text), each in category order; disjoint."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def of(self, split: str) -> tuple[str, ...]:
        if split == "train":
            return self.train
        if split == "heldout":
            return self.heldout
        if split == "all":
            return self.train + self.heldout
        raise ValueError(f"unknown split {split!r}; valid: train, heldout, all")


def split_captions(seed: int = 0, heldout_fraction: float = 0.2) -> CaptionSplit:
    """Hold out a seeded ``heldout_fraction`` of each category's captions (at least one)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    train: list[str] = []
    heldout: list[str] = []
    for index, category in enumerate(CATEGORIES):
        captions = [c.text() for c in captions_by_category()[category]]
        rng = np.random.default_rng([seed, index])
        count = max(1, round(heldout_fraction * len(captions)))
        held = set(rng.choice(len(captions), size=count, replace=False).tolist())
        train += [c for i, c in enumerate(captions) if i not in held]
        heldout += [c for i, c in enumerate(captions) if i in held]
    return CaptionSplit(tuple(train), tuple(heldout))


def stratified(captions: list[str] | tuple[str, ...], count: int, seed: int = 0) -> list[str]:
    """``count`` captions taken round-robin over categories (each category's order seeded), so every category
    is represented as evenly as the captions allow. Raises if fewer than ``count`` captions are given."""
    if count > len(captions):
        raise ValueError(f"asked for {count} captions but only {len(captions)} are available")
    groups: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for text in captions:
        groups[parse_caption(text).category].append(text)
    queues = []
    for index, category in enumerate(CATEGORIES):
        order = np.random.default_rng([seed, 1000 + index]).permutation(len(groups[category]))
        queues.append([groups[category][i] for i in order])
    chosen: list[str] = []
    for round_items in itertools.zip_longest(*queues):
        chosen += [c for c in round_items if c is not None]
        if len(chosen) >= count:
            break
    return chosen[:count]
