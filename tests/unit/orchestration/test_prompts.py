from __future__ import annotations

import pytest

from orchestration.prompts import builtin_shapes, load_prompt_set


def test_split_is_disjoint_and_deterministic():
    a = load_prompt_set("builtin:shapes", 8)
    b = load_prompt_set("builtin:shapes", 8)
    assert a == b
    assert not set(a.train_ids) & set(a.heldout_ids)
    assert len(a.heldout_ids) == 8 and len(a.train_ids) == len(builtin_shapes()) - 8


def test_batches_are_a_pure_function_of_seed_and_iteration():
    s = load_prompt_set("builtin:shapes", 8)
    assert s.batch(42, 5, 4) == s.batch(42, 5, 4)
    assert s.batch(42, 5, 4) != s.batch(43, 5, 4)
    # One epoch visits every train prompt exactly once.
    n = len(s.train_ids)
    seen = [pid for it in range(n // 4) for pid in s.batch(1, it, 4)]
    assert sorted(seen) == sorted(s.train_ids[: len(seen)]) or len(set(seen)) == len(seen)
    assert not set(seen) & set(s.heldout_ids)


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\nа dog\na bird\n")
    s = load_prompt_set(str(f), 1)
    assert len(s.prompts) == 3
    with pytest.raises(ValueError, match="heldout_count"):
        load_prompt_set(str(f), 3)
