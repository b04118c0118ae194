"""Local-directory loading: a missing or wrong path fails with a ValueError naming reward, path and layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workers.rewards import RewardOptions, get_reward

MODEL_REWARDS = ("aesthetic", "clipscore", "hpsv2", "imagereward", "pickscore")


@pytest.mark.parametrize("name", MODEL_REWARDS)
def test_no_path(name: str) -> None:
    with pytest.raises(ValueError, match=rf"reward '{name}' needs RewardOptions.path: a local directory with"):
        get_reward(name, RewardOptions())


@pytest.mark.parametrize("name", MODEL_REWARDS)
def test_missing_directory(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "not-downloaded"
    with pytest.raises(ValueError, match=rf"reward '{name}': path .*not-downloaded.* is not a directory; expected") as info:
        get_reward(name, RewardOptions(path=str(missing)))
    assert "config.json" in str(info.value)  # the layout is spelled out


@pytest.mark.parametrize(
    ("name", "removed"),
    [
        ("clipscore", "preprocessor_config.json"),
        ("pickscore", "tokenizer_config.json"),
        ("hpsv2", "model.safetensors"),
        ("aesthetic", "aesthetic_mlp.safetensors"),
        ("imagereward", "imagereward_head.safetensors"),
    ],
)
def test_missing_file_is_named(name: str, removed: str, tiny_reward_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / name
    shutil.copytree(tiny_reward_dirs[name], broken)
    (broken / removed).unlink()
    with pytest.raises(ValueError, match=rf"reward '{name}'.*lacks.*{removed.split('.')[0]}") as info:
        get_reward(name, RewardOptions(path=str(broken)))
    assert str(broken) in str(info.value)


def test_wrong_model_type(tiny_reward_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"reward 'pickscore'.*model_type 'blip', expected 'clip'"):
        get_reward("pickscore", RewardOptions(path=str(tiny_reward_dirs["imagereward"])))
    with pytest.raises(ValueError, match=r"reward 'imagereward'.*lacks.*imagereward_head"):
        get_reward("imagereward", RewardOptions(path=str(tiny_reward_dirs["clipscore"])))


def test_corrupt_weights(tiny_reward_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "clip"
    shutil.copytree(tiny_reward_dirs["clipscore"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"reward 'clipscore': cannot load CLIPModel from"):
        get_reward("clipscore", RewardOptions(path=str(broken)))


def test_head_with_wrong_keys(tiny_reward_dirs: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    broken = tmp_path / "aesthetic"
    shutil.copytree(tiny_reward_dirs["aesthetic"], broken)
    save_file({"mlp.layers.0.weight": torch.zeros(2, 2)}, str(broken / "aesthetic_mlp.safetensors"))
    with pytest.raises(ValueError, match=r"reward 'aesthetic': cannot load head weights"):
        get_reward("aesthetic", RewardOptions(path=str(broken)))


@pytest.mark.parametrize("name", MODEL_REWARDS)
def test_model_rewards_take_no_extra(name: str, tiny_reward_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=rf"reward '{name}': unknown RewardOptions.extra key\(s\) \['base_url'\]"):
        get_reward(name, RewardOptions(path=str(tiny_reward_dirs[name]), extra={"base_url": "http://x"}))


@pytest.mark.parametrize(("kwargs", "match"), [({"batch_size": 0}, "batch_size"), ({"device": ""}, "device"), ({"extra": [1]}, "mapping")])
def test_options_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RewardOptions(**kwargs)


def test_options_accept_pathlike(tmp_path: Path) -> None:
    assert RewardOptions(path=tmp_path).path == str(tmp_path)  # type: ignore[arg-type]
