"""Pretraining the compositional benchmark's base model, and sampling / scoring checkpoints.

``solrl pretrain --config configs/compositional/pretrain.yaml --out DIR`` (job kind ``pretrain``):

1. builds a small SD3-class pipeline (``workers.compositional.model``; pixel space through an identity
   VAE whose latent scaling is set from the training images);
2. trains the transformer and both text encoders with the flow-matching loss on freshly rendered scenes
   of the train captions (AdamW, warm-up + cosine learning rate, gradient clipping, EMA; BF16 autocast
   on a GPU), scoring the EMA model on held-out captions with the rule-based evaluator every
   ``eval.every`` steps;
3. writes, in ``DIR``: ``model/`` (the EMA pipeline in diffusers layout, loadable by
   ``workers.models.loading.load_model``: the RL configs take it as ``model.path: DIR/model``),
   ``metrics.jsonl``, ``summary.json``, ``samples.png`` (+ ``samples.txt``, the grid's captions),
   ``dataset_samples.png`` and ``config.yaml``.

The same module loads a checkpoint for ``solrl sample`` / ``solrl eval``: a diffusers directory (a
pretrained base) or an RL run directory (its latest checkpoint's EMA weights).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.artifacts import save_image_grid
from orchestration.config import ConfigError, apply_override, format_validation_error, read_config_file
from orchestration.jobs import PretrainConfig
from orchestration.metrics import MetricsSink
from orchestration.models import resolve_device
from workers.compositional.captions import split_captions, stratified
from workers.compositional.dataset import SceneStream
from workers.compositional.evaluator import evaluate, summarize
from workers.compositional.model import (
    ParameterEma,
    build_pipeline,
    encode_images,
    encode_prompts_for_training,
    flow_matching_loss,
    generate_images,
    lr_multiplier,
    parameter_count,
    sample_timesteps,
    set_latent_scaling,
)
from workers.compositional.validation import evaluator_accuracy_on
from workers.models.base import ModelAdapter
from workers.models.sd3 import SD3Adapter
from workers.sampling import candidate_seed

log = logging.getLogger(__name__)
MODEL_INFO = "solrl_model.json"  # written into the saved model directory
EVAL_ITERATION = 2**31 - 1  # the seeds' "iteration" of evaluation (as the RL loop's)


def load_pretrain_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Validate a pretraining YAML plus ``key.path=value`` overrides (as ``solrl train --set``)."""
    data = read_config_file(path)
    for item in overrides or []:
        apply_override(data, item)
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def framed(images_B3HW: torch.Tensor) -> torch.Tensor:
    """A one-pixel grey frame around each image, so white-background tiles stay apart in a grid."""
    return torch.nn.functional.pad(images_B3HW, (1, 1, 1, 1), value=0.6)


class PretrainError(RuntimeError):
    """The pretraining job cannot start as asked."""


# ---- evaluation shared by pretraining and the sample / eval commands ----------------------------------
def evaluation_seeds(seed: int, num_prompts: int, per_prompt: int) -> list[int]:
    return [candidate_seed(seed, EVAL_ITERATION, i, j) for i in range(num_prompts) for j in range(per_prompt)]


def score_captions(adapter: ModelAdapter, captions: list[str], *, seeds_per_prompt: int, num_steps: int,
                   solver: str, seed: int, batch_size: int, transformer: torch.nn.Module | None = None
                   ) -> tuple[dict, torch.Tensor, list[str]]:
    """Sample ``seeds_per_prompt`` images per caption at fixed seeds and score them: (summary, images, prompts)."""
    prompts = [c for c in captions for _ in range(seeds_per_prompt)]
    seeds = evaluation_seeds(seed, len(captions), seeds_per_prompt)
    images = generate_images(adapter, prompts, seeds, num_steps=num_steps, solver=solver, batch_size=batch_size,
                             transformer=transformer)
    return summarize(evaluate(images, prompts)), images, prompts


def flat_scores(prefix: str, summary: dict) -> dict[str, float]:
    out = {f"{prefix}_overall": summary["overall"], f"{prefix}_score_mean": summary["score_mean"]}
    out.update({f"{prefix}_accuracy_{c}": v for c, v in summary["accuracy_by_category"].items()})
    return out


# ---- the pretraining job --------------------------------------------------------------------------------
TRAIN_STATE = "train_state.pt"


def check_resume(cfg: PretrainConfig, out_dir: Path, resume: bool) -> dict | None:
    """The saved training state to continue from (``--resume``), after checking it fits ``cfg``; None for a
    fresh run, which must not overwrite an earlier one."""
    state_file = out_dir / TRAIN_STATE
    if not resume:
        if (out_dir / "model").exists() or state_file.exists():
            raise PretrainError(f"{out_dir} already holds a pretraining run; pass --resume to continue it "
                                "(raise train.steps / train.max_seconds to train longer) or choose another --out")
        return None
    if not state_file.is_file():
        raise PretrainError(f"--resume: no {TRAIN_STATE} in {out_dir}; start without --resume")
    saved = yaml.safe_load((out_dir / "config.yaml").read_text())
    # Only the training length and the evaluation may change on resume: the rest defines the model and data.
    fixed = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("train", "eval", "device")}
    changed = sorted(k for k, v in fixed.items() if saved.get(k) != v)
    if changed:
        raise PretrainError(f"--resume: {', '.join(changed)} differ from {out_dir / 'config.yaml'}; a resumed run "
                            "may change only train.* and eval.*")
    return torch.load(state_file, map_location="cpu", weights_only=False)


def run_pretrain(cfg: PretrainConfig, out_dir: Path, *, show_progress: bool = True, resume: bool = False) -> dict:
    out_dir = Path(out_dir)
    saved_state = check_resume(cfg, out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    split = split_captions(cfg.split_seed)
    pipeline = build_pipeline(cfg.spec(), cfg.seed).to(device)
    pipeline.set_progress_bar_config(disable=True)
    size = cfg.model.image_size
    stream = SceneStream(split.train, image_size=size, seed=cfg.seed, supersample=cfg.supersample, device=device)
    save_image_grid(framed(stream.batch(0, 24)[1].cpu()), out_dir / "dataset_samples.png", columns=8)
    sink = MetricsSink(out_dir, uuid.uuid4().hex[:12], append=saved_state is not None)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), disable=not show_progress, console=Console(stderr=True))
    try:
        vae_stats = prepare_vae(cfg, pipeline, split)  # deterministic: a resumed run recomputes the same scaling
        if saved_state is None:
            sink.emit({"iteration": 0, **vae_stats})
        log.info("identity VAE: max error %.2e, evaluator on reconstructions %.3f", vae_stats["vae_max_error"],
                 vae_stats["vae_recon_accuracy"])
        with progress:
            train_task = progress.add_task("pretrain: training", total=cfg.train.steps)
            if saved_state is not None:
                progress.update(train_task, completed=saved_state["step"])
            ema, run = train(cfg, pipeline, stream, split.heldout, sink,
                             lambda desc: progress.update(train_task, advance=1, description=desc),
                             saved_state=saved_state, state_file=out_dir / TRAIN_STATE)
            final = final_evaluation(cfg, ema.pipeline, split, out_dir)
            sink.emit({"iteration": run["steps"], **final["record"]})
    finally:
        sink.close()
    checkpoint = save_model(ema.pipeline, out_dir / "model", cfg, final["heldout"], run["steps"])
    losses = run["losses"]
    summary = {
        "steps": run["steps"],
        "resumed_from_step": saved_state["step"] if saved_state is not None else None,
        "steps_planned": cfg.train.steps,
        "train_seconds": run["train_seconds"],
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "image_size": size,
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        **vae_stats,
        "heldout_overall": final["heldout"]["overall"],
        "heldout_score_mean": final["heldout"]["score_mean"],
        "heldout_accuracy_by_category": final["heldout"]["accuracy_by_category"],
        "train_overall": final["train"]["overall"] if final["train"] else None,
        "train_accuracy_by_category": final["train"]["accuracy_by_category"] if final["train"] else None,
        "evaluations": run["evaluations"],
        "parameters": {name: parameter_count(getattr(pipeline, name))
                       for name in ("transformer", "text_encoder", "text_encoder_2", "vae")},
        "checkpoint": str(checkpoint),
        "checkpoint_bytes": sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("pretrained %d steps in %.0f s: held-out overall %.3f; model at %s", run["steps"], summary["seconds"],
             summary["heldout_overall"], checkpoint)
    return summary


def prepare_vae(cfg: PretrainConfig, pipeline, split) -> dict:
    """Scale the identity VAE's latents on training images; check that it reproduces held-out scenes (max
    pixel error, and the evaluator's accuracy on its reconstructions, which should be 1)."""
    def stream(captions: tuple[str, ...], seed: int) -> SceneStream:
        return SceneStream(captions, image_size=cfg.model.image_size, seed=seed, supersample=cfg.supersample,
                           device=pipeline.vae.device)

    set_latent_scaling(pipeline.vae, stream(split.train, cfg.seed + 1).images(0, 256))
    captions, images = stream(split.heldout, cfg.seed + 2).batch(0, 96)
    adapter = SD3Adapter(pipeline, height=cfg.model.image_size, width=cfg.model.image_size,
                         max_sequence_length=cfg.max_sequence_length)
    recon = adapter.decode(encode_images(pipeline.vae, images))
    return {"vae_max_error": float((recon - images).abs().max()),
            "vae_recon_accuracy": evaluator_accuracy_on(recon.cpu(), captions),
            "vae_scaling_factor": float(pipeline.vae.config.scaling_factor),
            "vae_shift_factor": float(pipeline.vae.config.shift_factor)}


@dataclass
class TrainState:
    """What the training loop carries from step to step."""

    pipeline: object
    adapter: SD3Adapter
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    ema: ParameterEma
    generator: torch.Generator
    autocast: AbstractContextManager


def start_training(cfg: PretrainConfig, pipeline) -> TrainState:
    """Unfreeze the transformer and text encoders; build the optimizer, the EMA and the noise generator."""
    modules = [pipeline.transformer, pipeline.text_encoder, pipeline.text_encoder_2]
    for module in modules:
        module.train().requires_grad_(True)
    params = [p for m in modules for p in m.parameters()]
    t = cfg.train
    device = pipeline.transformer.device
    size = cfg.model.image_size
    ema = ParameterEma(pipeline, t.ema_decay)  # copies the weights: made before compiling, from the plain module
    if t.compile and device.type == "cuda":
        pipeline.transformer.compile(mode=t.compile_mode)
    return TrainState(
        pipeline=pipeline,
        adapter=SD3Adapter(pipeline, height=size, width=size, max_sequence_length=cfg.max_sequence_length),
        params=params,
        # fused: one kernel for the whole update on a GPU (the foreach default launches several per tensor list)
        optimizer=torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                                    fused=device.type == "cuda"),
        ema=ema,
        generator=torch.Generator(device=device).manual_seed(cfg.seed),
        autocast=torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext(),
    )


def save_train_state(path: Path, state: TrainState, progress: dict) -> None:
    """Weights of the trained modules, their EMA, the optimizer, the noise generator and the loop's
    ``progress`` (step, train_seconds, losses, evaluations), written atomically (temp file + rename)."""
    modules = ParameterEma.MODULES
    payload = {
        "modules": {m: getattr(state.pipeline, m).state_dict() for m in modules},
        "ema": {m: getattr(state.ema.pipeline, m).state_dict() for m in modules},
        "ema_updates": state.ema.updates,
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        **progress,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_train_state(state: TrainState, saved: dict) -> None:
    for m in ParameterEma.MODULES:
        getattr(state.pipeline, m).load_state_dict(saved["modules"][m])
        getattr(state.ema.pipeline, m).load_state_dict(saved["ema"][m])
    state.ema.updates = saved["ema_updates"]
    state.optimizer.load_state_dict(saved["optimizer"])
    state.generator.set_state(saved["generator"])


def train_step(cfg: PretrainConfig, state: TrainState, captions: list[str], images: torch.Tensor, step: int,
               progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch and the EMA update; returns (loss, gradient norm before clipping) as
    0-d tensors on the device: reading them waits for the GPU, so the loop does that only when it logs."""
    t = cfg.train
    for group in state.optimizer.param_groups:
        group["lr"] = t.lr * lr_multiplier(step, progress, warmup=t.warmup_steps)
    latents = encode_images(state.pipeline.vae, images)
    with state.autocast:
        cond = encode_prompts_for_training(state.pipeline, captions, cfg.max_sequence_length)
        t_B = sample_timesteps(len(captions), logit_normal=t.timesteps == "logit_normal",
                               generator=state.generator, device=latents.device)
        loss = flow_matching_loss(state.adapter, latents, cond, t_B, state.generator)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.params, t.max_grad_norm)
    state.optimizer.step()
    state.ema.update()
    return loss.detach(), grad_norm.detach()


def train(cfg: PretrainConfig, pipeline, stream: SceneStream, heldout: tuple[str, ...], sink: MetricsSink, tick,
          *, saved_state: dict | None = None, state_file: Path | None = None) -> tuple[ParameterEma, dict]:
    """The flow-matching training loop (until ``train.steps`` or ``train.max_seconds``), from scratch or from
    ``saved_state``; saves the training state to ``state_file`` every ``train.checkpoint_every`` steps and at
    the end. Returns the EMA and a record of the run (logged losses, periodic evaluations, steps done,
    training seconds)."""
    t, e = cfg.train, cfg.eval
    state = start_training(cfg, pipeline)
    size = cfg.model.image_size
    eval_captions = stratified(heldout, min(e.num_prompts, len(heldout)), cfg.split_seed)
    losses, window, evals = [], [], []
    step, train_seconds = 0, 0.0
    if saved_state is not None:
        load_train_state(state, saved_state)
        step, train_seconds = saved_state["step"], saved_state["train_seconds"]
        losses, evals = list(saved_state["losses"]), list(saved_state["evaluations"])
        log.info("resuming pretraining at step %d (%.0f s trained)", step, train_seconds)

    def checkpoint() -> None:
        if state_file is not None:
            save_train_state(state_file, state, {"step": step, "train_seconds": train_seconds, "losses": losses,
                                                 "evaluations": evals})

    last = time.perf_counter()
    while step < t.steps and (t.max_seconds is None or train_seconds < t.max_seconds):
        step_start = time.perf_counter()
        progress = max(step / t.steps, train_seconds / t.max_seconds if t.max_seconds else 0.0)
        captions, images = stream.batch(step, t.batch_size)
        loss, grad_norm = train_step(cfg, state, captions, images, step, progress)
        window.append(loss)
        step += 1
        logging_step = step % t.log_every == 0 or step == 1
        if logging_step:  # the one host-device sync of a logged step: the GPU runs ahead between logs
            window_loss, norm = float(torch.stack(window).mean()), float(grad_norm)
        train_seconds += time.perf_counter() - step_start
        tick(f"pretrain: step {step}/{t.steps}" + (f", loss {losses[-1]:.4f}" if losses else ""))
        if logging_step:
            now = time.perf_counter()
            losses.append(window_loss)
            sink.emit({"iteration": step, "loss": losses[-1], "grad_norm": norm, "train_seconds": train_seconds,
                       "lr": state.optimizer.param_groups[0]["lr"], "steps_per_second": len(window) / (now - last)})
            window, last = [], now
        if e.every and step % e.every == 0 and step < t.steps:
            ema_adapter = SD3Adapter(state.ema.pipeline, height=size, width=size,
                                     max_sequence_length=cfg.max_sequence_length)
            summary, _, _ = score_captions(ema_adapter, eval_captions, seeds_per_prompt=e.seeds_per_prompt,
                                           num_steps=e.num_steps, solver=e.solver, seed=cfg.seed,
                                           batch_size=e.batch_size)
            evals.append({"iteration": step, **flat_scores("eval", summary)})
            sink.emit(evals[-1])
            log.info("step %d: held-out overall %.3f", step, summary["overall"])
            last = time.perf_counter()
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
            checkpoint()
            last = time.perf_counter()
    checkpoint()
    for module in (pipeline.transformer, pipeline.text_encoder, pipeline.text_encoder_2):
        module.eval().requires_grad_(False)
    return state.ema, {"losses": losses, "evaluations": evals, "steps": step, "train_seconds": train_seconds}


def final_evaluation(cfg: PretrainConfig, pipeline, split, out_dir: Path) -> dict:
    """Score the EMA model on held-out (and train) captions; write the held-out sample grid."""
    size = cfg.model.image_size
    adapter = SD3Adapter(pipeline, height=size, width=size, max_sequence_length=cfg.max_sequence_length)
    e = cfg.eval
    kwargs = {"seeds_per_prompt": e.seeds_per_prompt, "num_steps": e.num_steps, "solver": e.solver,
              "seed": cfg.seed, "batch_size": e.batch_size}
    heldout_captions = stratified(split.heldout, min(e.num_prompts, len(split.heldout)), cfg.split_seed)
    heldout, images, prompts = score_captions(adapter, heldout_captions, **kwargs)
    save_image_grid(framed(images), out_dir / "samples.png", columns=min(16, 4 * e.seeds_per_prompt))
    (out_dir / "samples.txt").write_text("\n".join(prompts) + "\n")
    train_summary = None
    if e.train_prompts:
        train_captions = stratified(split.train, min(e.train_prompts, len(split.train)), cfg.split_seed)
        train_summary, _, _ = score_captions(adapter, train_captions, **kwargs)
    record = flat_scores("eval", heldout)
    if train_summary is not None:
        record.update(flat_scores("train_eval", train_summary))
    return {"heldout": heldout, "train": train_summary, "record": record}


def save_model(pipeline, target: Path, cfg: PretrainConfig, heldout: dict, steps: int) -> Path:
    """Write ``pipeline`` in diffusers layout to ``target`` atomically (temp dir + rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    try:
        pipeline.save_pretrained(tmp)
        info = {"kind": "solrl compositional base model", "image_size": cfg.model.image_size,
                "max_sequence_length": cfg.max_sequence_length, "spec": asdict(cfg.spec()),
                "steps": steps, "heldout_overall": heldout["overall"], "split_seed": cfg.split_seed}
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2))
        if target.exists():  # a resumed run replaces the model it wrote before
            old = Path(tempfile.mkdtemp(prefix=".model-old-", dir=target.parent))
            target.rename(old / "model")
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---- loading checkpoints for the sample / eval commands -------------------------------------------------
def load_for_sampling(path: Path, *, device: str = "auto", size: int | None = None
                      ) -> tuple[ModelAdapter, torch.nn.Module | None, str]:
    """The adapter (and the transformer to sample with) of a base model directory or an RL run directory.

    ``path`` holding ``model_index.json``: a diffusers checkpoint, its own transformer, size from its
    ``solrl_model.json`` (else ``size``, else 64). ``path`` holding ``config.yaml`` and ``checkpoints/``: an RL
    run; its latest checkpoint's EMA weights, at the run's model size. Returns (adapter, transformer or None,
    a one-line description).
    """
    from workers.models.loading import load_model

    path = Path(path)
    if (path / "model_index.json").is_file():
        info_file = path / MODEL_INFO
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        side = size or info.get("image_size", 64)
        adapter = load_model(path, height=side, width=side, max_sequence_length=info.get("max_sequence_length", 8),
                             dtype=torch.float32, device=resolve_device(device))
        return adapter, None, f"base model {path}"
    if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
        from orchestration.checkpoint import latest_checkpoint, load_checkpoint
        from orchestration.config import load_config
        from orchestration.models import load_adapter
        from orchestration.roles import LocalRoles

        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(f"{path} is an RL run without a checkpoint under checkpoints/")
        train_cfg = load_config(path / "config.yaml", [f"model.device={device}"])
        roles = LocalRoles(train_cfg, load_adapter(train_cfg))
        roles.load_learner_state(load_checkpoint(checkpoint)[0])
        roles.load_eval_weights(use_ema=True)
        return roles.adapter, roles.evaluator.transformer, f"RL run {path} ({checkpoint.name}, EMA weights)"
    raise FileNotFoundError(
        f"{path} is neither a diffusers model directory (model_index.json) nor an RL run directory "
        "(config.yaml and checkpoints/)"
    )


def captions_of(prompt_set: str, split: str | None, num_prompts: int | None, split_seed: int = 0) -> list[str]:
    """Captions to evaluate: a split of ``builtin:compositional`` (default held-out), or every line of a text
    file of captions in the grammar; ``num_prompts`` takes that many round-robin over the categories."""
    if prompt_set == "builtin:compositional":
        captions = list(split_captions(split_seed).of(split or "heldout"))
    elif prompt_set.startswith("builtin:"):
        raise ValueError(f"--prompt-set {prompt_set!r}: only builtin:compositional has captions the evaluator can "
                         "score (or give a text file of such captions)")
    else:
        if split not in (None, "all"):
            raise ValueError(f"--split {split!r} applies to builtin:compositional only; a file is used whole")
        lines = Path(prompt_set).expanduser().read_text().splitlines()
        captions = [line.strip() for line in lines if line.strip()]
    return stratified(captions, num_prompts, split_seed) if num_prompts else captions


def evaluate_checkpoint(path: Path, captions: list[str], *, seeds_per_prompt: int, num_steps: int, solver: str,
                        seed: int, device: str = "auto", batch_size: int = 64, out_dir: Path | None = None) -> dict:
    """Score a base model or an RL run (see :func:`load_for_sampling`) on ``captions`` at fixed seeds, per
    category; with ``out_dir``, also write ``eval.json`` and ``eval_samples.png`` (+ ``eval_samples.txt``)."""
    adapter, transformer, description = load_for_sampling(path, device=device)
    summary, images, prompts = score_captions(adapter, captions, seeds_per_prompt=seeds_per_prompt,
                                              num_steps=num_steps, solver=solver, seed=seed, batch_size=batch_size,
                                              transformer=transformer)
    result = {"model": description, "num_prompts": len(captions), "seeds_per_prompt": seeds_per_prompt,
              "num_steps": num_steps, "solver": solver, **summary}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
        save_image_grid(framed(images), out_dir / "eval_samples.png", columns=min(16, 4 * seeds_per_prompt))
        (out_dir / "eval_samples.txt").write_text("\n".join(prompts) + "\n")
    return result


def sample_checkpoint(path: Path, prompts: list[str], out: Path, *, seeds_per_prompt: int, num_steps: int,
                      solver: str, seed: int, device: str = "auto") -> dict:
    """A grid (one row per prompt, ``seeds_per_prompt`` columns) at ``out``, and the evaluator's scores of the
    prompts in the compositional grammar (others are listed as not scored)."""
    from workers.compositional.captions import CaptionError, parse_caption

    adapter, transformer, description = load_for_sampling(path, device=device)
    expanded = [p for p in prompts for _ in range(seeds_per_prompt)]
    images = generate_images(adapter, expanded, evaluation_seeds(seed, len(prompts), seeds_per_prompt),
                             num_steps=num_steps, solver=solver, transformer=transformer)
    save_image_grid(framed(images), out, columns=seeds_per_prompt)
    scorable = []
    for index, prompt in enumerate(prompts):
        try:
            parse_caption(prompt)
            scorable.append(index)
        except CaptionError:
            pass
    rows = [i * seeds_per_prompt + j for i in scorable for j in range(seeds_per_prompt)]
    results = evaluate(images[rows], [expanded[r] for r in rows]) if rows else []
    scores = {}
    for k, index in enumerate(scorable):
        mine = results[k * seeds_per_prompt:(k + 1) * seeds_per_prompt]
        scores[prompts[index]] = {"category": mine[0].category, "correct": [r.correct for r in mine],
                                  "score": [round(r.score, 4) for r in mine]}
    not_scored = [p for i, p in enumerate(prompts) if i not in scorable]
    return {"model": description, "grid": str(out), "scores": scores, "not_scored": not_scored}
