"""The two reward tables together: names, lookup errors, and MultiReward with model-based rewards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.workers.rewards.conftest import PROMPTS
from workers.rewards import (
    REWARD_BUILDERS,
    REWARDS,
    RewardOptions,
    combine_rewards,
    get_reward,
    jpeg_compressibility,
    known_rewards,
)
from workers.rewards.clip import ClipSimilarityReward

MODEL_NAMES = {"aesthetic", "clipscore", "hpsv2", "imagereward", "pickscore", "vlm_judge"}


def test_tables_are_disjoint_and_complete() -> None:
    assert set(REWARD_BUILDERS) == MODEL_NAMES
    assert not set(REWARDS) & set(REWARD_BUILDERS)
    assert known_rewards() == set(REWARDS) | set(REWARD_BUILDERS)
    assert {"jpeg_compressibility", "jpeg_incompressibility"} <= known_rewards()


def test_unknown_name_lists_every_valid_name() -> None:
    with pytest.raises(KeyError) as info:
        get_reward("pickscore_v9")
    for name in known_rewards():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown reward name.*nope.*jpeg_compressibility.*clipscore.*vlm_judge"):
        combine_rewards({"nope": 1.0})
    with pytest.raises(ValueError, match="empty.*jpeg_compressibility.*aesthetic"):
        combine_rewards({})


def test_get_reward_option_rules(tiny_reward_dirs: dict[str, Path]) -> None:
    assert get_reward("jpeg_compressibility") is jpeg_compressibility
    with pytest.raises(ValueError, match="'jpeg_compressibility' is pure and takes no RewardOptions"):
        get_reward("jpeg_compressibility", RewardOptions())
    with pytest.raises(ValueError, match="'clipscore' is model-based and needs RewardOptions"):
        get_reward("clipscore")
    assert isinstance(get_reward("clipscore", RewardOptions(path=str(tiny_reward_dirs["clipscore"]))), ClipSimilarityReward)


def test_multireward_pure_plus_model(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    options = {"clipscore": RewardOptions(path=str(tiny_reward_dirs["clipscore"]), batch_size=2)}
    combined = combine_rewards({"jpeg_compressibility": 0.5, "clipscore": 2.0}, options=options)
    # The model is built once, at construction, and reused by every call.
    built = combined._fns["clipscore"]
    assert isinstance(built, ClipSimilarityReward) and not built.encoder.model.training
    assert all(not p.requires_grad for p in built.encoder.model.parameters())
    out = combined(images, PROMPTS)
    assert combined._fns["clipscore"] is built
    clip = get_reward("clipscore", RewardOptions(path=str(tiny_reward_dirs["clipscore"])))(images, PROMPTS)
    jpeg = jpeg_compressibility(images, PROMPTS)
    torch.testing.assert_close(out.components["clipscore"], clip)
    torch.testing.assert_close(out.components["jpeg_compressibility"], jpeg)
    torch.testing.assert_close(out.total, 0.5 * jpeg + 2.0 * clip)
    assert combined.weights == {"jpeg_compressibility": 0.5, "clipscore": 2.0}


def test_backward_compatible_pure_combination(images: torch.Tensor) -> None:
    out = combine_rewards({"jpeg_compressibility": 1.0})(images, PROMPTS)
    torch.testing.assert_close(out.total, jpeg_compressibility(images, PROMPTS))


@pytest.mark.parametrize(
    ("weights", "options", "match"),
    [
        ({"clipscore": 1.0}, None, r"model-based reward\(s\) \['clipscore'\] need options"),
        ({"jpeg_compressibility": 1.0}, {"jpeg_compressibility": RewardOptions()}, "are pure and take no options"),
        ({"jpeg_compressibility": 1.0}, {"clipscore": RewardOptions(path="/x")}, r"options given for reward\(s\) \['clipscore'\] that have no weight"),
        ({"clipscore": 1.0}, {"clipscore": {"path": "/x"}}, "must be a RewardOptions"),
    ],
)
def test_options_validation(weights: dict, options: dict | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        combine_rewards(weights, options=options)


def test_weights_checked_before_any_model_load(tmp_path: Path) -> None:
    """A bad weight fails before the (possibly multi-GB) model would be loaded: the path need not exist."""
    with pytest.raises(ValueError, match="sum to > 0"):
        combine_rewards({"clipscore": -1.0}, options={"clipscore": RewardOptions(path=str(tmp_path / "absent"))})


def test_model_scores_are_ordinary_tensors(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    """Callers normalise rewards in place (advantages); scores must not be inference-mode tensors."""
    for name in ("clipscore", "aesthetic", "imagereward"):
        scores = get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name])))(images, PROMPTS)
        assert not scores.is_inference() and not scores.requires_grad
        scores -= scores.mean()
