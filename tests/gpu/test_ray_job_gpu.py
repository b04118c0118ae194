"""The 3-iteration Ray job on real GPUs: FP8 stage-1 rollouts, colocate on one GPU, split on two.

Writes each run's summary and per-iteration phase and sync timings to $SOLRL_GPU_RESULTS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from orchestration.config import load_config
from orchestration.runner import run_training

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"
JOB = ["iterations=3", "eval.every=0", "rollout.precision=fp8", "model.device=cuda", "rollout.num_candidates=32",
       "regen.num_selected=8", "resources.rollout_workers=2", "resources.regen_workers=1", "resources.learners=1"]


@pytest.fixture(scope="module")
def ray_gpu_cluster(tmp_path_factory):
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="local", num_cpus=8, num_gpus=torch.cuda.device_count(), include_dashboard=False,
             _temp_dir=str(tmp_path_factory.mktemp("r")), log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _run(placement: str, gpus: int, tmp_path: Path) -> dict:
    cfg = load_config(QUICKSTART, [*JOB, f"resources.placement={placement}", f"resources.num_gpus={gpus}"])
    out = tmp_path / placement
    summary = run_training(cfg, out, show_progress=False, mode="ray")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keep = ("iteration", "reward_mean", "proxy_reward_mean", "fidelity_spearman", "stage1_seconds", "stage2_seconds",
            "learner_seconds", "sync_seconds", "iteration_seconds", "rollout_images_per_second")
    result = {"placement": placement, "num_gpus": gpus, "summary": summary,
              "iterations": [{k: r.get(k) for k in keep} for r in records if "reward_mean" in r]}
    target = Path(os.environ.get("SOLRL_GPU_RESULTS", "docs/results/gpu"))
    target.mkdir(parents=True, exist_ok=True)
    (target / f"ray_job_{placement}.json").write_text(json.dumps(result, indent=2))
    return summary


def test_colocate_fp8_one_gpu(ray_gpu_cluster, tmp_path):
    summary = _run("colocate", 1, tmp_path)
    assert summary["iterations"] == 3 and summary["device"].startswith("cuda")


def test_split_fp8_two_gpus(ray_gpu_cluster, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("split placement needs 2 GPUs")
    summary = _run("split", 2, tmp_path)
    assert summary["iterations"] == 3
