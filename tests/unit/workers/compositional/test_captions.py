"""The caption grammar: templates, parser round trip, the split."""

from __future__ import annotations

import pytest

from workers.compositional.captions import (
    Caption,
    CaptionError,
    Mention,
    captions_by_category,
    parse_caption,
    split_captions,
    stratified,
)
from workers.compositional.vocabulary import CATEGORIES


def test_every_caption_round_trips_and_has_its_category():
    by_category = captions_by_category()
    assert list(by_category) == list(CATEGORIES)
    texts = [c.text() for cs in by_category.values() for c in cs]
    assert len(texts) == len(set(texts)) == 750
    for category, captions in by_category.items():
        for caption in captions:
            parsed = parse_caption(caption.text())
            assert parsed == caption
            assert parsed.category == category
            assert parsed.text() == caption.text()


@pytest.mark.parametrize(("text", "caption"), [
    ("a circle", Caption((Mention("circle"),))),
    ("a red circle", Caption((Mention("circle", "red"),))),
    ("four crosses", Caption((Mention("cross", None, 4),))),
    ("a square and a triangle", Caption((Mention("square"), Mention("triangle")))),
    ("a diamond left of a circle", Caption((Mention("diamond"), Mention("circle")), "left of")),
    ("a triangle below a square", Caption((Mention("triangle"), Mention("square")), "below")),
    ("a blue cross and a yellow diamond", Caption((Mention("cross", "blue"), Mention("diamond", "yellow")))),
    ("  A  Red circle ", Caption((Mention("circle", "red"),))),  # case and spaces are normalised
])
def test_parse_examples(text, caption):
    assert parse_caption(text) == caption


@pytest.mark.parametrize(("text", "match"), [
    ("a cat", "not a singular shape"),
    ("two circle", "not a plural shape"),
    ("a pink circle", "unknown colour"),
    ("five circles", "not a mention"),
    ("a red circle on a square", "not a mention"),
    ("", "not a mention"),
])
def test_parse_errors_name_the_problem(text, match):
    with pytest.raises(CaptionError, match=match):
        parse_caption(text)


def test_split_is_deterministic_disjoint_and_covers_every_category():
    a, b = split_captions(0), split_captions(0)
    assert a == b
    assert not set(a.train) & set(a.heldout)
    assert len(a.train) + len(a.heldout) == 750
    assert split_captions(1).heldout != a.heldout
    for split in (a.train, a.heldout):
        assert {parse_caption(c).category for c in split} == set(CATEGORIES)
    # Held-out captions are unseen combinations of words that all occur in training.
    train_words = {w for c in a.train for w in c.split()}
    assert {w for c in a.heldout for w in c.split()} <= train_words
    assert a.of("all") == a.train + a.heldout
    with pytest.raises(ValueError, match="unknown split"):
        a.of("test")


def test_stratified_round_robin():
    split = split_captions(0)
    chosen = stratified(split.heldout, 12)
    assert len(chosen) == len(set(chosen)) == 12
    categories = [parse_caption(c).category for c in chosen]
    assert set(categories) == set(CATEGORIES)  # the first round takes one of each
    assert stratified(split.heldout, 12) == chosen
    with pytest.raises(ValueError, match="only"):
        stratified(split.heldout, len(split.heldout) + 1)
