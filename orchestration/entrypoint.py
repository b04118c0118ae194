"""The Ray job entrypoint: ``python -m orchestration.entrypoint JOB_DIR``.

Reads ``JOB_DIR/spec.json`` (``{"kind": ..., "config": {...}}``, written by the job service),
validates it again with the kind's model, and runs it with ``JOB_DIR`` as the output directory. A
job directory that already holds a checkpoint is resumed, so a re-submitted (or restarted) job
continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from orchestration.jobs import EvalJobConfig, PretrainConfig, validate_job
from workers.aux.common.config import AuxConfig

log = logging.getLogger("solrl.entrypoint")


def run_eval(cfg: EvalJobConfig, out: Path) -> dict:
    """Evaluate a training run's latest checkpoint (EMA weights) on its held-out prompts."""
    from orchestration.artifacts import save_image_grid
    from orchestration.checkpoint import latest_checkpoint, load_checkpoint
    from orchestration.config import load_config
    from orchestration.models import load_adapter
    from orchestration.pipeline import TwoStageLoop
    from orchestration.roles import LocalRoles

    run_dir = Path(cfg.run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"config.run_dir {str(run_dir)!r} has no checkpoint to evaluate")
    train_cfg = load_config(run_dir / "config.yaml", [f"eval.num_steps={cfg.num_steps}",
                                                      f"eval.seeds_per_prompt={cfg.seeds_per_prompt}"])
    roles = LocalRoles(train_cfg, load_adapter(train_cfg))
    learner_state, _ = load_checkpoint(checkpoint)
    roles.load_learner_state(learner_state)
    result, images = TwoStageLoop(train_cfg, roles).evaluate(use_ema=True)
    result = {**result, "checkpoint": checkpoint.name, "num_steps": cfg.num_steps}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    save_image_grid(images, out / "eval_samples.png", columns=cfg.seeds_per_prompt * 4)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestration.entrypoint JOB_DIR", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job_dir = Path(args[0])
    spec = json.loads((job_dir / "spec.json").read_text())
    kind, cfg = validate_job(spec["kind"], spec["config"])
    log.info("job %s: kind %s in %s", spec.get("id", "?"), kind.name, job_dir)
    if isinstance(cfg, EvalJobConfig):
        result = run_eval(cfg, job_dir)
    elif isinstance(cfg, AuxConfig):
        from orchestration.aux_runner import run_aux

        result = run_aux(kind.name, cfg, job_dir, show_progress=False)
        result = {k: result[k] for k in ("method", "preset", "wall_seconds")}  # the full record is results.json
    elif isinstance(cfg, PretrainConfig):
        from orchestration.pretrain import TRAIN_STATE, run_pretrain

        result = run_pretrain(cfg, job_dir, show_progress=False, resume=(job_dir / TRAIN_STATE).is_file())
    else:
        from orchestration.checkpoint import latest_checkpoint
        from orchestration.runner import run_training

        result = run_training(cfg, job_dir, mode="ray", resume=latest_checkpoint(job_dir) is not None,
                              job_id=spec.get("id"), show_progress=False)
    print(json.dumps(result))  # noqa: T201 - the job's log ends with its summary
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
