"""The `solrl` command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _solrl(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOLRL_TINY_ROOT": str(env_root)}
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_writes_summary(tmp_path, tiny_root):
    out = tmp_path / "run"
    proc = _solrl("train", "--config", "configs/quickstart.yaml", "--out", str(out), "--set", "iterations=2",
                  "--set", "prompts.per_iteration=2", env_root=tiny_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["iterations"] == 2 and summary["method"] == "solrl"
    assert json.loads((out / "summary.json").read_text()) == summary


def test_bad_config_fails_before_work_naming_field(tmp_path, tiny_root):
    out = tmp_path / "never"
    proc = _solrl("train", "--config", "configs/quickstart.yaml", "--out", str(out), "--set",
                  "regen.num_selected=64", env_root=tiny_root)
    assert proc.returncode == 2
    assert "regen.num_selected" in proc.stderr and "rollout.num_candidates" in proc.stderr
    assert not out.exists()  # nothing half-created
    proc = _solrl("validate", "--config", "configs/quickstart.yaml", "--set", "rollout.nope=1", env_root=tiny_root)
    assert proc.returncode == 2 and "rollout.nope" in proc.stderr
