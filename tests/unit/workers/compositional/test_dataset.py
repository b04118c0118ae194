"""Training batches, and the builtin:compositional prompt set the RL loop loads."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from orchestration.prompts import load_prompt_set
from workers.compositional.captions import parse_caption, split_captions
from workers.compositional.dataset import SceneStream
from workers.compositional.evaluator import evaluate
from workers.compositional.vocabulary import CATEGORIES


def test_stream_is_deterministic_balanced_and_correct():
    split = split_captions(0)
    stream = SceneStream(split.train, image_size=32, seed=5, supersample=2)
    captions, images = stream.batch(3, 60)
    again_captions, again_images = stream.batch(3, 60)
    assert captions == again_captions and torch.equal(images, again_images)
    assert stream.batch(4, 60)[0] != captions
    assert set(captions) <= set(split.train)
    counts = Counter(parse_caption(c).category for c in captions)
    assert set(counts) == set(CATEGORIES) and max(counts.values()) <= 3 * min(counts.values())
    assert all(r.correct for r in evaluate(images, captions))


def test_compositional_prompt_set():
    s = load_prompt_set("builtin:compositional", 24)
    assert s == load_prompt_set("builtin:compositional", 24)
    split = split_captions(0)
    train = {s.prompts[i] for i in s.train_ids}
    heldout = [s.prompts[i] for i in s.heldout_ids]
    assert train == set(split.train) and not train & set(heldout)
    assert len(heldout) == 24 and set(heldout) <= set(split.heldout)
    assert {parse_caption(c).category for c in heldout} == set(CATEGORIES)
    # Categories weigh the same in training: each appears about equally often per epoch.
    per_epoch = Counter(parse_caption(s.prompts[i]).category for i in s.train_ids)
    assert max(per_epoch.values()) <= 1.1 * min(per_epoch.values())
    batch = s.batch(42, 0, 8)
    assert batch == s.batch(42, 0, 8) and set(batch) <= set(s.train_ids)
    with pytest.raises(ValueError, match="heldout_count"):
        load_prompt_set("builtin:compositional", 1000)
