"""A job's directory: spec writing, metrics as JSON, checkpoint step, and artifact names that stay inside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the job service needs the api extra")

from services.api.job_files import (  # noqa: E402
    checkpoint_step,
    list_artifacts,
    read_metrics,
    resolve_artifact,
    write_spec,
)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    directory = write_spec(tmp_path / "jobs", "j1", "solrl", {"iterations": 2})
    (directory / "summary.json").write_text("{}")
    (directory / "checkpoints" / "iter-000002").mkdir(parents=True)
    (directory / "checkpoints" / "iter-000002" / "loop.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    return directory


def test_write_spec_is_all_or_nothing(tmp_path: Path) -> None:
    directory = write_spec(tmp_path, "j1", "eval", {"run_dir": "x"})
    assert json.loads((directory / "spec.json").read_text()) == {"id": "j1", "kind": "eval",
                                                                  "config": {"run_dir": "x"}}
    assert [p.name for p in tmp_path.iterdir()] == ["j1"]  # no temp dir left behind


@pytest.mark.parametrize("name", ["summary.json", "checkpoints/iter-000002/loop.json", "inside-link"])
def test_regular_files_inside_resolve(job: Path, name: str) -> None:
    os.symlink("summary.json", job / "inside-link")
    assert resolve_artifact(job, name) is not None


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../secret.txt", "../../etc/passwd", "checkpoints/../../secret.txt",
                                  "./summary.json", "checkpoints//iter-000002/loop.json", "a\\..\\secret.txt",
                                  "summary.json\x00", "checkpoints", "missing.txt", "out-link", "abs-link",
                                  "dir-link/secret.txt", "loop"])
def test_names_leaving_the_job_dir_or_not_regular_files_are_refused(job: Path, name: str) -> None:
    os.symlink("../secret.txt", job / "out-link")
    os.symlink("/etc/passwd", job / "abs-link")
    os.symlink(job.parent.parent, job / "dir-link")
    os.symlink("loop", job / "loop")
    assert resolve_artifact(job, name) is None


def test_listing_skips_symlinks_and_temp_dirs(job: Path) -> None:
    os.symlink("../secret.txt", job / "out-link")
    (job / "checkpoints" / ".tmp-abc").mkdir()
    (job / "checkpoints" / ".tmp-abc" / "partial.pt").write_bytes(b"x")
    names = [name for name, _, _ in list_artifacts(job)]
    assert names == ["spec.json", "summary.json", "checkpoints/iter-000002/loop.json"]


def test_metrics_as_json_with_since_step_and_a_torn_last_line(job: Path) -> None:
    lines = [json.dumps({"iteration": 0, "eval_reward_mean": 1.0}), json.dumps({"iteration": 1, "loss": float("nan")}),
             json.dumps({"iteration": 2, "kl": float("inf")}), '{"iteration": 3, "lo']
    (job / "metrics.jsonl").write_text("\n".join(lines))
    records = read_metrics(job, None)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert records[1]["loss"] is None and records[2]["kl"] is None  # JSON has no NaN
    assert [r["iteration"] for r in read_metrics(job, 2)] == [2]
    assert read_metrics(job.parent / "nope", None) == []


def test_checkpoint_step_reads_the_latest_pointer(job: Path) -> None:
    assert checkpoint_step(job) is None
    (job / "checkpoints" / "latest").write_text("iter-000002")
    assert checkpoint_step(job) == 2
    (job / "checkpoints" / "latest").write_text("garbage")
    assert checkpoint_step(job) is None
