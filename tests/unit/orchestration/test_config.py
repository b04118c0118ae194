"""Config validation: every preset loads; bad input fails before any work, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.config import ConfigError, TrainJobConfig, load_config, parse_config

CONFIGS = sorted((Path(__file__).parents[3] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_preset_validates(path):
    if path.name.startswith("pretrain"):  # the base-model pretraining job has its own config model
        from orchestration.pretrain import load_pretrain_config

        load_pretrain_config(path, [])
        return
    cfg = load_config(path)
    assert isinstance(cfg, TrainJobConfig)


def test_quickstart_is_solrl_on_tiny():
    cfg = load_config(Path(__file__).parents[3] / "configs" / "quickstart.yaml")
    assert cfg.method == "solrl" and cfg.model.path.startswith("tiny:")


def _err(data: dict, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, list(overrides))
    return str(info.value)


def test_unknown_key_names_field():
    msg = _err({"rollout": {"num_candiates": 8}})
    assert "rollout.num_candiates" in msg and "unknown key" in msg


def test_n_less_than_k():
    msg = _err({"rollout": {"num_candidates": 8}, "regen": {"num_selected": 16, "batch_size": 8}})
    assert "regen.num_selected" in msg and "rollout.num_candidates" in msg


def test_k_odd_for_best_worst():
    msg = _err({"rollout": {"num_candidates": 8}, "regen": {"num_selected": 5}})
    assert "regen.num_selected" in msg and "even" in msg


def test_missing_model_path(tmp_path):
    msg = _err({"model": {"path": str(tmp_path / "missing")}})
    assert "model.path" in msg and "does not exist" in msg
    msg = _err({"model": {"path": str(tmp_path)}})
    assert "model_index.json" in msg


def test_wrong_type_and_value():
    assert "iterations" in _err({"iterations": "many"})
    assert "rollout.precision" in _err({"rollout": {"precision": "int3"}})
    assert "reward.weights" in _err({"reward": {"weights": {"pickscore_v9": 1.0}}})


def test_solrl_needs_low_precision_stage1():
    assert "rollout.precision" in _err({"rollout": {"precision": "bf16"}})


def test_baseline_shapes():
    assert "num_candidates" in _err({"method": "diffusionnft"})  # default N=96 != K=24
    cfg = parse_config({"method": "diffusionnft", "rollout": {"num_candidates": 24}})
    assert cfg.objective == "nft"
    assert parse_config({"method": "flow_grpo", "rollout": {"num_candidates": 24}}).objective == "grpo"


def test_grpo_window_range_within_regen_steps():
    base = {"method": "flow_grpo", "rollout": {"num_candidates": 24}, "regen": {"num_steps": 3}}
    message = _err({**base, "train": {"grpo": {"sde_window_size": 2, "sde_window_range": [0, 8]}}})
    assert "train.grpo.sde_window_range" in message and "regen.num_steps" in message


def test_budget_seconds_must_be_positive():
    assert "budget_seconds" in _err({"budget_seconds": 0})
    assert parse_config({"budget_seconds": 90}).budget_seconds == 90


def test_overrides_apply_and_validate():
    cfg = parse_config({}, ["iterations=3", "rollout.num_candidates=16", "regen.num_selected=4"])
    assert cfg.iterations == 3 and cfg.rollout.num_candidates == 16 and cfg.regen.num_selected == 4
    assert "override" in _err({}, "iterations")


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_readme_config_reference_is_current():
    from orchestration.config_reference import readme_with_reference

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert readme == readme_with_reference(readme), "run: python -m orchestration.config_reference --update README.md"
