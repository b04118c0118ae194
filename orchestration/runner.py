"""Run a training job in this process: iterations with a progress bar, and the run's files.

Writes to the output directory:
  config.yaml          the validated config (defaults filled in)
  metrics.jsonl        one JSON object per iteration (and per evaluation)
  summary.json         iterations, reward_first, reward_last, eval_first, eval_last, seconds, ...
  samples_initial.png  held-out samples before training
  samples_final.png    held-out samples after training
  reward_curve.png     train and held-out reward per iteration
  precision_report.txt which layers the stage-1 precision swapped and skipped
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.artifacts import save_image_grid, save_reward_curve
from orchestration.config import TrainJobConfig
from orchestration.pipeline import TwoStagePipeline

log = logging.getLogger(__name__)


def _json_safe(value: float) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def run_training(cfg: TrainJobConfig, out_dir: Path, *, show_progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    started = time.perf_counter()
    pipeline = TwoStagePipeline(cfg)
    if pipeline.stage1 is not None:
        (out_dir / "precision_report.txt").write_text(pipeline.stage1.report.to_text())
    records: list[dict] = []
    metrics_file = (out_dir / "metrics.jsonl").open("w")

    def emit(record: dict) -> None:
        records.append(record)
        metrics_file.write(json.dumps({k: _json_safe(v) if isinstance(v, float) else v
                                       for k, v in record.items()}) + "\n")
        metrics_file.flush()

    per_iter = cfg.prompts.per_iteration * (
        cfg.rollout.num_candidates + cfg.regen.num_selected if cfg.method == "solrl"
        else cfg.regen.num_selected if cfg.method in ("diffusionnft", "flow_grpo") else cfg.rollout.num_candidates
    )
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), disable=not show_progress, transient=False,
                        console=Console(stderr=True))
    with progress:
        iterations_task = progress.add_task(f"{cfg.method}: iterations", total=cfg.iterations)
        samples_task = progress.add_task("samples this iteration", total=per_iter)

        def evaluate(iteration: int, name: str | None = None) -> dict:
            progress.update(iterations_task, description=f"{cfg.method}: evaluating")
            result, images, _ = pipeline.evaluate(use_ema=cfg.eval.use_ema and iteration > 0)
            if name:
                save_image_grid(images, out_dir / name, columns=cfg.eval.seeds_per_prompt * 4)
            record = {"iteration": iteration, **result}
            emit(record)
            return record

        first_eval = evaluate(0, "samples_initial.png")
        for it in range(cfg.iterations):
            progress.reset(samples_task, total=per_iter)
            progress.update(iterations_task, description=f"{cfg.method}: iteration {it + 1}/{cfg.iterations}")
            record = pipeline.run_iteration(it, tick=lambda n: progress.advance(samples_task, n))
            emit(record)
            progress.advance(iterations_task)
            if cfg.eval.every and (it + 1) % cfg.eval.every == 0 and it + 1 < cfg.iterations:
                evaluate(it + 1)
        last_eval = evaluate(cfg.iterations, "samples_final.png")
    metrics_file.close()

    train_records = [r for r in records if "reward_mean" in r]
    fid = [r["fidelity_spearman"] for r in train_records if _json_safe(r.get("fidelity_spearman")) is not None]
    fid_k = [r["fidelity_kendall"] for r in train_records if _json_safe(r.get("fidelity_kendall")) is not None]
    summary = {
        "method": cfg.method,
        "iterations": cfg.iterations,
        "reward_first": train_records[0]["reward_mean"] if train_records else None,
        "reward_last": train_records[-1]["reward_mean"] if train_records else None,
        "eval_first": first_eval["eval_reward_mean"],
        "eval_last": last_eval["eval_reward_mean"],
        "eval_gain": last_eval["eval_reward_mean"] - first_eval["eval_reward_mean"],
        "fidelity_spearman_mean": sum(fid) / len(fid) if fid else None,
        "fidelity_kendall_mean": sum(fid_k) / len(fid_k) if fid_k else None,
        "sync_seconds_mean": (sum(r.get("sync_seconds", 0.0) for r in train_records) / len(train_records)
                              if train_records else None),
        "seconds": time.perf_counter() - started,
        "device": str(pipeline.adapter.device),
        "model": cfg.model.path,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    save_reward_curve(records, out_dir / "reward_curve.png", f"{cfg.method} on {cfg.model.path}")
    return summary
