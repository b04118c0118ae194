"""The tiny reward-model builders: caching, errors, and leaving the global RNG alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.rewards.tiny import TINY_REWARD_MODELS, ensure_tiny_reward_model


def test_cached_and_complete(tiny_reward_dirs: dict[str, Path]) -> None:
    assert set(tiny_reward_dirs) == set(TINY_REWARD_MODELS) == {"aesthetic", "clipscore", "hpsv2", "imagereward", "pickscore"}
    for name, path in tiny_reward_dirs.items():
        assert ensure_tiny_reward_model(name, path.parent) == path  # second call: cache hit
        assert (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file()
        assert sum(f.stat().st_size for f in path.iterdir()) < 5_000_000  # tiny: a few hundred kB each


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="no tiny model for reward 'vlm_judge'; valid: aesthetic, clipscore"):
        ensure_tiny_reward_model("vlm_judge", Path("/nonexistent"))


def test_seeded_and_global_rng_untouched(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = ensure_tiny_reward_model("clipscore", tmp_path / "a", seed=1)
    torch.testing.assert_close(torch.rand(3), expected_next)  # builders use fork_rng
    b = ensure_tiny_reward_model("clipscore", tmp_path / "b", seed=1)
    c = ensure_tiny_reward_model("clipscore", tmp_path / "c", seed=2)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    assert any(not torch.equal(wa[key], wc[key]) for key in wa)
