"""Does Sol-RL learn? Tiny model, JPEG compressibility, fixed seed, one process.

Runs the same job twice: with updates and as a no-update control (identical sampling, no
optimizer step). Only the first may raise the held-out BF16 reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.config import load_config
from orchestration.runner import run_training

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"
OVERRIDES = ["iterations=16", "eval.every=0", "prompts.per_iteration=4", "rollout.num_candidates=16",
             "regen.num_selected=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("learning")
    trained = run_training(load_config(QUICKSTART, OVERRIDES), out / "solrl", show_progress=False)
    control = run_training(load_config(QUICKSTART, [*OVERRIDES, "train.update=false"]), out / "control",
                           show_progress=False)
    return trained, control, out


def test_solrl_raises_heldout_reward_beyond_control(runs):
    trained, control, _ = runs
    print(f"held-out reward gain: solrl {trained['eval_gain']:+.4f} kB, no-update {control['eval_gain']:+.4f} kB")
    # The control samples the same seeds with the same weights: its gain is exactly zero.
    assert control["eval_gain"] == pytest.approx(0.0, abs=1e-6)
    assert trained["eval_gain"] > 0.02  # kB of JPEG size saved per image on held-out prompts
    assert trained["eval_gain"] > control["eval_gain"] + 0.02


def test_run_writes_its_files(runs):
    trained, _, out = runs
    run_dir = out / "solrl"
    for name in ("metrics.jsonl", "summary.json", "samples_initial.png", "samples_final.png", "reward_curve.png",
                 "precision_report.txt", "config.yaml"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("iterations", "reward_first", "reward_last", "seconds"):
        assert summary[key] is not None
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "reward_mean" in r]
    assert len(train_lines) == 16
    assert all(-1.0 <= r["fidelity_spearman"] <= 1.0 for r in train_lines)
    assert "nvfp4" in (run_dir / "precision_report.txt").read_text()


def test_budget_seconds_stops_the_run_and_records_wall_clock(tmp_path, tiny_root):
    """A tiny budget ends the run after its first iteration; metrics carry the training seconds spent."""
    cfg = load_config(QUICKSTART, [*OVERRIDES, "iterations=50", "budget_seconds=1e-6", "eval.every=1"])
    summary = run_training(cfg, tmp_path / "budget", show_progress=False)
    assert summary["iterations"] == 1 and summary["iterations_planned"] == 50
    lines = [json.loads(line) for line in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "reward_mean" in r]
    evals = [r for r in lines if "eval_reward_mean" in r]
    assert len(train_lines) == 1 and train_lines[0]["train_seconds"] == train_lines[0]["iteration_seconds"] > 0
    assert [e["iteration"] for e in evals] == [0, 1]  # initial and final evaluation, the final one at the stop
    assert evals[0]["train_seconds"] == 0 and evals[1]["train_seconds"] == pytest.approx(summary["train_seconds"])


def test_budget_after_first_iteration_leaves_the_warm_up_off_the_clock(tmp_path, tiny_root):
    """With the first iteration (compilation) off the budget clock, a tiny budget ends the run after the second."""
    cfg = load_config(QUICKSTART, [*OVERRIDES, "iterations=50", "budget_seconds=1e-6", "eval.every=0",
                                   "budget_after_first_iteration=true"])
    summary = run_training(cfg, tmp_path / "warm", show_progress=False)
    assert summary["iterations"] == 2
