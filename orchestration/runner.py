"""Run a training job: iterations with a progress bar, checkpoints, resume, and the run's files.

Writes to the output directory:
  config.yaml          the validated config (defaults filled in)
  metrics.jsonl        one JSON object per iteration (and per evaluation); tensorboard/ has the same
  summary.json         iterations, reward_first, reward_last, eval_first, eval_last, seconds, ...
  samples_initial.png  held-out samples before training
  samples_final.png    held-out samples after training
  reward_curve.png     train and held-out reward per iteration
  precision_report.txt which layers the stage-1 precision swapped and skipped
  checkpoints/         atomic checkpoints (every checkpoint.every iterations, at the end, on SIGTERM)
"""

from __future__ import annotations

import json
import logging
import signal
import time
import uuid
from pathlib import Path
from typing import Literal

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.artifacts import save_image_grid, save_reward_curve
from orchestration.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from orchestration.config import TrainJobConfig
from orchestration.metrics import MetricsSink, read_records
from orchestration.pipeline import GuardState, TwoStageLoop
from orchestration.roles import LocalRoles, Roles

log = logging.getLogger(__name__)
Mode = Literal["in-process", "ray"]


class RunError(RuntimeError):
    """The run cannot start as asked (e.g. an existing run directory without --resume)."""


class Stopped(Exception):
    """SIGTERM arrived; the run checkpointed and stopped between iterations."""


def build_roles(cfg: TrainJobConfig, mode: Mode, job_id: str) -> Roles:
    if mode == "ray":
        from orchestration.cluster import RayRoles

        return RayRoles(cfg, job_id=job_id, role_resources=cfg.resources.role_resources)
    from orchestration.models import load_adapter

    return LocalRoles(cfg, load_adapter(cfg))


def samples_per_iteration(cfg: TrainJobConfig) -> int:
    p, n, k = cfg.prompts.per_iteration, cfg.rollout.num_candidates, cfg.regen.num_selected
    if cfg.method == "solrl":
        return p * (n + k)
    return p * (k if cfg.method in ("diffusionnft", "flow_grpo") else n)


def run_training(
    cfg: TrainJobConfig,
    out_dir: Path,
    *,
    show_progress: bool = True,
    mode: Mode = "in-process",
    resume: bool = False,
    job_id: str | None = None,
    roles: Roles | None = None,
) -> dict:
    out_dir = Path(out_dir)
    checkpoint = latest_checkpoint(out_dir)
    if resume and checkpoint is None:
        raise RunError(f"--resume: no checkpoint under {out_dir / 'checkpoints'}; start without --resume")
    if not resume and (out_dir / "checkpoints").exists():
        raise RunError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    job_id = job_id or uuid.uuid4().hex[:12]
    started = time.perf_counter()
    roles = roles or build_roles(cfg, mode, job_id)
    try:
        return _run(cfg, out_dir, roles, checkpoint, show_progress, mode, job_id, started)
    finally:
        roles.close()


def _run(cfg: TrainJobConfig, out_dir: Path, roles: Roles, checkpoint: Path | None, show_progress: bool,
         mode: Mode, job_id: str, started: float) -> dict:
    loop = TwoStageLoop(cfg, roles)
    description = roles.describe()
    if description.get("precision_report"):
        (out_dir / "precision_report.txt").write_text(description["precision_report"])

    start_iteration = 0
    records: list[dict] = []
    if checkpoint is not None:
        learner_state, loop_state = load_checkpoint(checkpoint)
        roles.load_learner_state(learner_state)
        start_iteration = int(loop_state["iteration"])
        loop.version = int(loop_state["version"])
        loop.guard = GuardState(**loop_state["guard"])
        if loop.guard.precision is not None:
            roles.set_stage1_precision(loop.guard.precision)
        # Keep what the interrupted run recorded up to its checkpoint; later lines are redone.
        records = [r for r in read_records(out_dir / "metrics.jsonl") if r.get("iteration", 0) <= start_iteration
                   and not ("reward_mean" in r and r["iteration"] >= start_iteration)]
        log.info("resuming from %s at iteration %d", checkpoint, start_iteration)
    sink = MetricsSink(out_dir, job_id, ray_metrics=(mode == "ray"))
    for record in records:
        sink.emit(record)

    stop_requested = {"flag": False}

    def on_sigterm(signum, frame):  # noqa: ARG001
        stop_requested["flag"] = True
        log.warning("SIGTERM: checkpointing after the current iteration")

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def save(iteration: int) -> None:
        loop_state = {"version": loop.version, "seed": cfg.seed, "guard": loop.guard.__dict__,
                      "rng": "every generator derives from (seed, iteration); no global RNG is used"}
        save_checkpoint(out_dir, iteration, roles.learner_state(), loop_state, keep=cfg.checkpoint.keep)

    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), disable=not show_progress, console=console)
    per_iter = samples_per_iteration(cfg)
    try:
        with progress:
            iterations_task = progress.add_task(f"{cfg.method}: iterations", total=cfg.iterations,
                                                completed=start_iteration)
            samples_task = progress.add_task("samples this iteration", total=per_iter)
            spent = sum(r.get("iteration_seconds", 0.0) for r in records)  # training seconds, resumed runs included

            def over_budget() -> bool:
                if cfg.budget_seconds is None:
                    return False
                first = next((r["iteration_seconds"] for r in records if r.get("iteration") == 0
                              and "iteration_seconds" in r), None) if cfg.budget_after_first_iteration else 0.0
                return first is not None and spent - first >= cfg.budget_seconds

            def evaluate(iteration: int, grid_name: str | None = None) -> dict:
                progress.update(iterations_task, description=f"{cfg.method}: evaluating")
                result, images = loop.evaluate(use_ema=cfg.eval.use_ema and loop.version > 0)
                if grid_name:
                    save_image_grid(images, out_dir / grid_name, columns=cfg.eval.seeds_per_prompt * 4)
                # Training seconds spent before this evaluation: the x axis of reward vs wall-clock.
                record = {"iteration": iteration, "train_seconds": spent, **result}
                records.append(record)
                sink.emit(record)
                return record

            if checkpoint is None:
                evaluate(0, "samples_initial.png")
            done = start_iteration
            for it in range(start_iteration, cfg.iterations):
                if over_budget():  # a resumed run whose budget was already spent
                    log.info("budget of %.0f s spent after %d iterations", cfg.budget_seconds, done)
                    break
                progress.reset(samples_task, total=per_iter)
                progress.update(iterations_task, description=f"{cfg.method}: iteration {it + 1}/{cfg.iterations}")
                t0 = time.perf_counter()
                record = loop.run_iteration(it, tick=lambda n: progress.advance(samples_task, n))
                record["iteration_seconds"] = time.perf_counter() - t0
                spent += record["iteration_seconds"]
                record["train_seconds"] = spent
                records.append(record)
                sink.emit(record, precision=loop.guard.precision)
                progress.advance(iterations_task)
                done = it + 1
                last = done >= cfg.iterations or over_budget()
                if cfg.eval.every and done % cfg.eval.every == 0 and not last:
                    evaluate(done)
                if stop_requested["flag"]:
                    save(done)
                    raise Stopped(f"stopped by SIGTERM after iteration {done}; resume with --resume")
                if last:
                    break
                if cfg.checkpoint.every and done % cfg.checkpoint.every == 0:
                    save(done)
            final_eval = evaluate(done, "samples_final.png")
            save(done)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.close()

    summary = summarize(cfg, records, final_eval, time.perf_counter() - started, description, loop, job_id, done)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    save_reward_curve(records, out_dir / "reward_curve.png", f"{cfg.method} on {cfg.model.path}")
    return summary


def summarize(cfg: TrainJobConfig, records: list[dict], final_eval: dict, seconds: float, description: dict,
              loop: TwoStageLoop, job_id: str, iterations_done: int) -> dict:
    train = [r for r in records if "reward_mean" in r]
    evals = [r for r in records if "eval_reward_mean" in r]

    def mean_of(key: str) -> float | None:
        values = [r[key] for r in train if isinstance(r.get(key), int | float) and r[key] == r[key]]
        return sum(values) / len(values) if values else None

    first_eval = evals[0]["eval_reward_mean"] if evals else None
    return {
        "job_id": job_id,
        "method": cfg.method,
        "iterations": iterations_done,
        "iterations_planned": cfg.iterations,
        "budget_seconds": cfg.budget_seconds,
        "train_seconds": train[-1].get("train_seconds") if train else 0.0,
        "reward_first": train[0]["reward_mean"] if train else None,
        "reward_last": train[-1]["reward_mean"] if train else None,
        "eval_first": first_eval,
        "eval_last": final_eval["eval_reward_mean"],
        "eval_gain": final_eval["eval_reward_mean"] - first_eval if first_eval is not None else None,
        "fidelity_spearman_mean": mean_of("fidelity_spearman"),
        "fidelity_kendall_mean": mean_of("fidelity_kendall"),
        "fidelity_half_overlap_mean": mean_of("fidelity_half_overlap"),
        "fidelity_best_half_bf16_rank_mean": mean_of("fidelity_best_half_bf16_rank"),
        "fidelity_worst_half_bf16_rank_mean": mean_of("fidelity_worst_half_bf16_rank"),
        "audit_spearman_mean": mean_of("audit_spearman"),
        "audit_topk_overlap_mean": mean_of("audit_topk_overlap"),
        "audit_best_half_bf16_rank_mean": mean_of("audit_best_half_bf16_rank"),
        "audit_worst_half_bf16_rank_mean": mean_of("audit_worst_half_bf16_rank"),
        "sync_seconds_mean": mean_of("sync_seconds"),
        "guard_switches": loop.guard.switches,
        "seconds": seconds,
        "mode": description.get("mode"),
        "device": description.get("device"),
        "model": cfg.model.path,
    }
