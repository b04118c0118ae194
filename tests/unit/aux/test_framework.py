"""The auxiliary-job framework: presets, the registry, job kinds, the CLI's errors."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import Field, ValidationError
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.jobs import JOB_KINDS, JobSpecError, validate_job
from workers.aux.common.config import AuxConfig, StrictModel, deep_merge
from workers.aux.registry import AUX_METHODS


class _Train(StrictModel):
    steps: int = Field(100, ge=1, description="steps")
    lr: float = Field(1e-3, gt=0, description="lr")


class _Toy(AuxConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"train": {"steps": 2}}, "quick": {}, "full": {"train": {"steps": 1000, "lr": 1e-4}}}
    train: _Train = _Train()


def test_deep_merge_keeps_sibling_keys():
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}}) == {"a": {"x": 1, "y": 5}, "b": 3}


def test_preset_fills_only_what_the_user_left_out():
    cfg = _Toy.model_validate({"preset": "full", "train": {"steps": 10}})
    assert cfg.train.steps == 10 and cfg.train.lr == 1e-4  # override wins, sibling from the preset
    assert _Toy.model_validate({"preset": "smoke"}).train.steps == 2
    assert _Toy.model_validate({}).preset == "quick" and _Toy().train.steps == 100


def test_bad_preset_and_unknown_keys_name_the_field():
    with pytest.raises(ValidationError, match="preset"):
        _Toy.model_validate({"preset": "huge"})
    with pytest.raises(ValidationError, match="stepz"):
        _Toy.model_validate({"train": {"stepz": 3}})


def test_every_method_is_a_job_kind_with_its_own_config():
    for name, method in AUX_METHODS.items():
        kind = JOB_KINDS[f"aux.{name}"]
        assert kind.priority == "aux" and "results.json" in kind.artifacts
        if method.implemented:
            assert kind.runnable and kind.config_model is method.config_model()
            assert set(method.config_model().PRESETS) == {"smoke", "quick", "full"}, name


def test_implemented_kinds_validate_their_presets_and_reject_typos():
    for name, method in AUX_METHODS.items():
        if not method.implemented:
            with pytest.raises(JobSpecError, match="not implemented"):
                validate_job(f"aux.{name}", {"preset": "quick"})
            continue
        for preset in ("smoke", "quick", "full"):
            _, cfg = validate_job(f"aux.{name}", {"preset": preset})
            assert cfg.preset == preset
        with pytest.raises(JobSpecError) as err:
            validate_job(f"aux.{name}", {"preset": "quick", "no_such_field": 1})
        assert err.value.errors[0][0] == "config.no_such_field"


def test_aux_resources_follow_the_device():
    method = next((m for m in AUX_METHODS.values() if m.implemented), None)
    if method is None:
        pytest.skip("no auxiliary method implemented yet")
    kind = JOB_KINDS[f"aux.{method.name}"]
    assert kind.resources(kind.validate({"device": "cpu"})).num_gpus == 0
    assert kind.resources(kind.validate({"device": "auto"})).num_gpus == 0
    assert kind.resources(kind.validate({"device": "cuda"})).num_gpus == 1


def test_cli_lists_methods_and_reports_bad_fields():
    runner = CliRunner()
    listed = runner.invoke(app, ["aux", "list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in AUX_METHODS)
    unknown = runner.invoke(app, ["aux", "show", "no_such_method"])
    assert unknown.exit_code == 2 and "unknown auxiliary method" in unknown.output
    method = next((m for m in AUX_METHODS.values() if m.implemented), None)
    if method is not None:
        bad = runner.invoke(app, ["aux", "show", method.name, "--set", "seed=-1"])
        assert bad.exit_code == 2 and "config.seed" in bad.output
        shown = runner.invoke(app, ["aux", "show", method.name, "--preset", "smoke"])
        assert shown.exit_code == 0 and '"preset": "smoke"' in shown.output
