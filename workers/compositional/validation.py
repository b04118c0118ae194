"""How good is the evaluator? Its accuracy on rendered ground truth and on mismatched pairs.

:func:`validate_evaluator` renders ``n`` scenes for captions drawn evenly from the six categories and
scores each image three ways:

- with its own caption (``ground_truth_*``): every check should pass;
- with the caption of another image (``shuffled_*``, a seeded derangement): mostly wrong; a shuffled
  caption can still be true by chance (e.g. "a circle" for an image of "a red circle");
- with a minimally edited caption that is false for the image by construction (``perturbed_*``: a
  count off by one, another colour, another shape, or the relation reversed): never right.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from workers.compositional.captions import Caption, Mention, captions_by_category, parse_caption
from workers.compositional.evaluator import evaluate, summarize
from workers.compositional.scenes import render_scenes, scenes_for
from workers.compositional.vocabulary import CATEGORIES, COLOURS, MAX_OBJECTS, SHAPES

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def balanced_captions(n: int, seed: int) -> list[str]:
    """``n`` captions, category i % 6 for caption i, each drawn uniformly from its category (all splits)."""
    rng = np.random.default_rng([seed, 7])
    pools = captions_by_category()
    out = []
    for i in range(n):
        pool = pools[CATEGORIES[i % len(CATEGORIES)]]
        out.append(pool[int(rng.integers(len(pool)))].text())
    return out


def perturb_caption(caption: Caption, rng: np.random.Generator) -> Caption:
    """A caption that is false for every scene of ``caption``: one count, colour, shape or the relation changed.

    Shapes are only changed to one that no other mention uses (so the changed mention's count drops to 0) and
    counts stay within 1..MAX_OBJECTS objects in all.
    """
    if caption.relation is not None and rng.random() < 0.5:
        return Caption(caption.mentions, _OPPOSITE[caption.relation])
    index = int(rng.integers(len(caption.mentions)))
    mention = caption.mentions[index]
    used = {m.shape for m in caption.mentions}
    edits = ["shape"]
    if mention.colour is not None:
        edits.append("colour")
    if len(caption.mentions) == 1:
        edits.append("count")
    edit = edits[int(rng.integers(len(edits)))]
    if edit == "shape":
        shapes = [s for s in SHAPES if s not in used]
        new = dataclasses.replace(mention, shape=shapes[int(rng.integers(len(shapes)))])
    elif edit == "colour":
        colours = [c for c in COLOURS if c != mention.colour]
        new = dataclasses.replace(mention, colour=colours[int(rng.integers(len(colours)))])
    else:
        counts = [c for c in (mention.count - 1, mention.count + 1) if 1 <= c <= MAX_OBJECTS]
        count = counts[int(rng.integers(len(counts)))]
        # Counted mentions carry no colour in the grammar ("two red circles" is not a caption).
        new = Mention(mention.shape, mention.colour if count == 1 else None, count)
    mentions = list(caption.mentions)
    mentions[index] = new
    return Caption(tuple(mentions), caption.relation)


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        order = rng.permutation(n)
        if n < 2 or not np.any(order == np.arange(n)):
            return order


def validate_evaluator(n: int = 300, seed: int = 0, size: int = 64, supersample: int = 4) -> dict:
    """Accuracy of the evaluator on ``n`` rendered ground-truth images of ``size`` pixels (see module docstring).

    Returns a dict with ``ground_truth_accuracy`` (share of images whose own caption passes),
    ``ground_truth_by_category``, ``shuffled_accuracy`` / ``shuffled_score_mean`` (captions of other images),
    ``perturbed_accuracy`` / ``perturbed_score_mean`` (captions false by construction), and the failures'
    captions (``ground_truth_failures``, at most 20) for inspection.
    """
    if n < 2:
        raise ValueError(f"validate_evaluator needs n >= 2 images, got {n}")
    captions = balanced_captions(n, seed)
    images = render_scenes(scenes_for(captions, seed), size, supersample=supersample)
    rng = np.random.default_rng([seed, 11])
    shuffled = [captions[i] for i in _derangement(n, rng)]
    perturbed = [perturb_caption(parse_caption(c), rng).text() for c in captions]
    results = {name: evaluate(images, prompts) for name, prompts in
               (("ground_truth", captions), ("shuffled", shuffled), ("perturbed", perturbed))}
    truth = summarize(results["ground_truth"])
    return {
        "n": n,
        "seed": seed,
        "image_size": size,
        "ground_truth_accuracy": truth["image_accuracy"],
        "ground_truth_by_category": truth["accuracy_by_category"],
        "shuffled_accuracy": float(np.mean([r.correct for r in results["shuffled"]])),
        "shuffled_score_mean": float(np.mean([r.score for r in results["shuffled"]])),
        "perturbed_accuracy": float(np.mean([r.correct for r in results["perturbed"]])),
        "perturbed_score_mean": float(np.mean([r.score for r in results["perturbed"]])),
        "ground_truth_failures": [r.caption for r in results["ground_truth"] if not r.correct][:20],
    }


def evaluator_accuracy_on(images_B3HW: torch.Tensor, captions: list[str]) -> float:
    """Share of images whose caption passes every check (e.g. VAE reconstructions of rendered ground truth)."""
    return float(np.mean([r.correct for r in evaluate(images_B3HW, captions)]))
