"""The ``solrl`` command."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestration.client_cli import register as register_service_commands
from orchestration.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Rollout-scaled RL post-training for text-to-image diffusion models.")
console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML job config (see configs/).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a field: key.path=value (repeatable).")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _load(config: Path, overrides: list[str] | None):
    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


@app.command()
def validate(config: ConfigOpt, overrides: SetOpt = None) -> None:
    """Validate a config and print it with every default filled in."""
    cfg = _load(config, overrides)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command()
def train(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for metrics, samples, summary.")],
    overrides: SetOpt = None,
    in_process: Annotated[bool, typer.Option("--in-process/--ray", help="All roles in this process, or Ray actors.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a training job (Sol-RL or a baseline, per the config's method)."""
    _setup_logging(verbose)
    cfg = _load(config, overrides)
    from orchestration.runner import RunError, Stopped, run_training

    try:
        summary = run_training(cfg, out, show_progress=True, mode="in-process" if in_process else "ray",
                               resume=resume)
    except RunError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    except Stopped as err:
        console.print(f"[yellow]{err}[/yellow]")
        raise typer.Exit(143) from None
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/quickstart"),
    config: Annotated[Path, typer.Option("--config", "-c")] = Path("configs/quickstart.yaml"),
    overrides: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start a local Ray cluster in this process and run Sol-RL on the tiny model (the embedded default)."""
    _setup_logging(verbose)
    cfg = _load(config, overrides)
    from orchestration.cluster import ensure_ray, ray_dashboard_url
    from orchestration.runner import RunError, run_training

    console.print("[bold]Starting a local Ray cluster...[/bold]")
    ensure_ray(include_dashboard=True)
    console.print(f"Ray dashboard: [link]{ray_dashboard_url() or 'not available'}[/link]")
    try:
        summary = run_training(cfg, out, show_progress=True, mode="ray", resume=(out / "checkpoints").exists())
    except RunError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))
    console.print(f"Samples, reward curve and metrics: {out}/ (dashboard: {ray_dashboard_url()})")


bench_app = typer.Typer(no_args_is_help=True, help="Measure rollout, iteration and weight-sync speed.")
app.add_typer(bench_app, name="bench")


def _overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, _, raw = item.partition("=")
        out[key] = yaml.safe_load(raw)
    return out


def _learner_attention(value: str) -> str:
    """--learner-attention of bench iteration, checked where it is parsed (the learner runs minutes later)."""
    from typing import get_args

    from workers.learner import AttentionBackend

    valid = get_args(AttentionBackend)
    if value not in valid:
        raise typer.BadParameter(f"must be one of {', '.join(valid)}, got {value!r}")
    return value


def _compile_scope(value: str) -> str:
    """--compile-scope of the bench commands, checked where it is parsed."""
    if value not in ("full", "blocks"):
        raise typer.BadParameter(f"--compile-scope must be full or blocks, got {value!r}")
    return value


@bench_app.command("rollout")
def bench_rollout_cmd(
    arch: Annotated[str, typer.Option(help="sd35_medium, sd35_large, flux1_dev, sana_1600m")] = "sd35_medium",
    resolution: Annotated[int, typer.Option()] = 512,
    steps: Annotated[int, typer.Option()] = 6,
    batch: Annotated[int, typer.Option()] = 8,
    modes: Annotated[str, typer.Option(help="Comma list: diffusers-eager-bf16, engine-bf16, engine-fp8, "
                                              "engine-nvfp4")] = "diffusers-eager-bf16,engine-bf16,engine-fp8,engine-nvfp4",
    compile_engine: Annotated[bool, typer.Option("--compile/--no-compile")] = True,
    compile_mode: Annotated[str | None, typer.Option(help="torch.compile mode (default, reduce-overhead = "
                                                          "CUDA graphs, max-autotune-no-cudagraphs).")] = None,
    min_dim: Annotated[int | None, typer.Option(help="Quantize layers with max(in, out) > min_dim (default: the "
                                                     "family's policy; 0 = every layer the skip list allows).")] = None,
    compile_scope: Annotated[str, typer.Option(callback=_compile_scope, help="full (one graph) or blocks (each "
                                               "transformer block: much shorter compilation on deep models).")] = "full",
    device: Annotated[str, typer.Option()] = "cuda",
    repeats: Annotated[int, typer.Option()] = 3,
    arch_set: Annotated[list[str] | None, typer.Option("--arch-set", help="Config override key=value "
                                                             "(e.g. num_layers=2 for a smoke run).")] = None,
    out: Annotated[Path, typer.Option(help="Writes OUT.json and OUT.md.")] = Path("docs/results/rollout"),
) -> None:
    """Images/s of the denoising loop per mode, with the GEMM roofline."""
    from orchestration.bench.report import write_report
    from orchestration.bench.rollout import (
        bench_rollout,
        measured_gemm_tflops,
        rows_to_dicts,
        rows_to_markdown,
    )

    ceilings = measured_gemm_tflops(device)
    rows = bench_rollout(arch, resolution=resolution, steps=steps, batch=batch, modes=modes.split(","),
                         compile_engine=compile_engine, device=device, repeats=repeats,
                         overrides=_overrides(arch_set), bf16_tflops=ceilings.get("bf16"), compile_mode=compile_mode,
                         min_dim=min_dim, compile_scope=compile_scope)
    table = rows_to_markdown(rows)
    write_report(out, f"Rollout speed: {arch} at {resolution} px", table, rows_to_dicts(rows),
                 {"gemm_tflops_measured": ceilings, "arch_overrides": _overrides(arch_set),
                  "compile_mode": compile_mode or "default", "compile_scope": compile_scope,
                  "min_dim": "family policy" if min_dim is None else min_dim})
    typer.echo(table)


@bench_app.command("layer")
def bench_layer_cmd(
    shapes: Annotated[str, typer.Option(help="Comma list of MxKxN.")] = "24576x2048x2048,16384x1536x1536,16384x1536x6144",
    device: Annotated[str, typer.Option()] = "cuda",
    out: Annotated[Path, typer.Option(help="Writes OUT.json and OUT.md.")] = Path("docs/results/bench/layer"),
) -> None:
    """One linear layer per precision path: the quantization pass against the GEMM, eager and fused."""
    from orchestration.bench.layer import bench_layer, rows_to_dicts, rows_to_markdown
    from orchestration.bench.report import write_report

    rows = []
    for shape in shapes.split(","):
        m, k, n = (int(v) for v in shape.lower().split("x"))
        rows += bench_layer(m, k, n, device=device)
    table = rows_to_markdown(rows)
    write_report(out, "Linear layer cost per precision path", table, rows_to_dicts(rows))
    typer.echo(table)


@bench_app.command("iteration")
def bench_iteration_cmd(
    arch: Annotated[str, typer.Option(help="sd35_medium, sd35_large, flux1_dev, sana_1600m")] = "sd35_medium",
    resolution: Annotated[int, typer.Option()] = 512,
    num_candidates: Annotated[int, typer.Option("--candidates", help="N candidates per prompt.")] = 96,
    num_selected: Annotated[int, typer.Option("--selected", help="K trained on (best/worst halves).")] = 24,
    explore_steps: Annotated[int, typer.Option(help="Stage-1 (low-precision) sampling steps.")] = 6,
    train_steps: Annotated[int, typer.Option(help="BF16 sampling steps (stage 2 and the baselines).")] = 10,
    precision: Annotated[str, typer.Option(help="Stage-1 precision: fp8 or nvfp4.")] = "fp8",
    sample_batch: Annotated[int, typer.Option(help="Candidates per forward batch.")] = 48,
    lora_rank: Annotated[int, typer.Option()] = 32,
    micro_batch: Annotated[int, typer.Option(help="Learner samples per forward/backward (memory).")] = 8,
    compile_learner: Annotated[bool, typer.Option("--compile-learner/--eager-learner",
                                                  help="torch.compile the learner's transformer.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute block activations in the learner's backward (a 12B learner beside its copies needs it).")
    ] = False,
    learner_attention: Annotated[str, typer.Option(callback=_learner_attention, help="The learner's attention "
                                                   "kernel: auto, flash, efficient, cudnn or math.")] = "auto",
    compile_copies: Annotated[bool, typer.Option("--compile/--no-compile")] = True,
    compile_scope: Annotated[str, typer.Option(callback=_compile_scope, help="full (one graph per sampling copy) or "
                                               "blocks (each transformer block: regional, far shorter compiles at 12B).")
                             ] = "full",
    device: Annotated[str, typer.Option()] = "cuda",
    repeats: Annotated[int, typer.Option()] = 2,
    arch_set: Annotated[list[str] | None, typer.Option("--arch-set", help="Config override key=value.")] = None,
    small_reward: Annotated[bool, typer.Option("--small-reward", help="Shrunk reward stack (CPU smoke runs).")] = False,
    schemes: Annotated[str, typer.Option(help="Comma-separated schemes to time: solrl, naive_scaling, diffusionnft "
                                         "(a 12B model's iteration fits a device call with two).")] =
        "solrl,naive_scaling,diffusionnft",
    out: Annotated[Path, typer.Option(help="Writes OUT.json and OUT.md.")] = Path("docs/results/bench/iteration"),
) -> None:
    """Seconds per phase of one Sol-RL iteration against naive BF16 K-of-N and K-of-K."""
    _setup_logging(True)  # each phase is logged as it ends: a 12B model's first iteration compiles for minutes
    from orchestration.bench.iteration import bench_iteration, rows_to_dicts, rows_to_markdown
    from orchestration.bench.report import write_report

    def report(rows) -> str:  # after every scheme: a run cut short keeps what it finished
        table = rows_to_markdown(rows)
        write_report(out, f"One RL iteration: {arch} at {resolution} px, {num_selected} of {num_candidates}", table,
                     rows_to_dicts(rows), {"precision": precision, "explore_steps": explore_steps,
                                           "train_steps": train_steps, "micro_batch": micro_batch,
                                           "compile_learner": compile_learner, "compile_copies": compile_copies,
                                           "gradient_checkpointing": gradient_checkpointing,
                                           "learner_attention": learner_attention,
                                           "compile_scope": compile_scope, "arch_overrides": _overrides(arch_set)})
        return table

    rows = bench_iteration(arch, resolution=resolution, num_candidates=num_candidates, num_selected=num_selected,
                           explore_steps=explore_steps, train_steps=train_steps, precision=precision,
                           sample_batch=sample_batch, lora_rank=lora_rank, micro_batch=micro_batch,
                           compile_learner=compile_learner, gradient_checkpointing=gradient_checkpointing,
                           learner_attention=learner_attention,
                           device=device,
                           compile_copies=compile_copies, compile_scope=compile_scope, repeats=repeats,
                           overrides=_overrides(arch_set),
                           schemes=_schemes(schemes), small_reward=small_reward, on_row=report)
    typer.echo(report(rows))


def _schemes(text: str) -> tuple[str, ...]:
    from orchestration.bench.iteration import SCHEMES as valid

    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in valid]
    if unknown or not chosen:
        raise typer.BadParameter(f"--schemes: unknown {unknown or 'empty list'}; choose from {', '.join(valid)}")
    return chosen


@bench_app.command("fidelity")
def bench_fidelity_cmd(
    config: ConfigOpt,
    overrides: SetOpt = None,
    proxies: Annotated[str | None, typer.Option(help="Comma-separated precision:steps[:batch] settings to rank with "
                                                "(default: the config's proxy, BF16 at its steps, its precision at "
                                                "stage 2's steps, and the reference at half the batch: the ceiling).")
                       ] = None,
    reference: Annotated[str | None, typer.Option(help="precision:steps of the ranking to match (default: BF16 at "
                                                  "regen.num_steps).")] = None,
    prompts: Annotated[int, typer.Option("--prompts", min=1, help="Training prompts, N candidates each.")] = 4,
    out: Annotated[Path, typer.Option(help="Writes OUT.json and OUT.md.")] = Path("docs/results/fidelity/fidelity"),
) -> None:
    """Which part of a proxy's ranking error is precision and which is step count, on the config's model."""
    _setup_logging(True)
    from orchestration.bench.fidelity import bench_fidelity, default_settings, parse_setting, rows_to_markdown
    from orchestration.bench.report import write_report

    cfg = _load(config, overrides)
    try:
        ref, chosen = default_settings(cfg)
        ref = parse_setting(reference, "--reference") if reference else ref
        chosen = [parse_setting(p) for p in proxies.split(",") if p.strip()] if proxies else chosen
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    n, k = cfg.rollout.num_candidates, cfg.regen.num_selected

    def report(rows) -> str:  # after every setting: a run cut short keeps what it finished
        table = rows_to_markdown(rows, ref, n, k)
        write_report(out, f"Selection fidelity by precision and steps: {cfg.model.path}", table,
                     [r.as_dict() for r in rows], {"reference": ref.label, "prompts": prompts, "candidates": n,
                                                    "selected": k, "seed": cfg.seed})
        return table

    rows = bench_fidelity(cfg, ref, chosen, num_prompts=prompts, on_row=report)
    typer.echo(report(rows))


@bench_app.command("sync")
def bench_sync_cmd(
    arch: Annotated[str, typer.Option()] = "sd35_medium",
    precisions: Annotated[str, typer.Option()] = "bf16,fp8,nvfp4",
    lora_rank: Annotated[int, typer.Option()] = 32,
    device: Annotated[str, typer.Option()] = "cuda",
    repeats: Annotated[int, typer.Option()] = 3,
    arch_set: Annotated[list[str] | None, typer.Option("--arch-set")] = None,
    out: Annotated[Path, typer.Option()] = Path("docs/results/sync"),
) -> None:
    """Weight refresh latency (LoRA merge or full weights, with re-quantization) per precision."""
    from orchestration.bench.report import write_report
    from orchestration.bench.sync import bench_sync, rows_to_dicts, rows_to_markdown

    rows = bench_sync(arch, precisions=precisions.split(","), lora_rank=lora_rank, device=device,
                      repeats=repeats, overrides=_overrides(arch_set))
    table = rows_to_markdown(rows)
    write_report(out, f"Weight refresh: {arch}", table, rows_to_dicts(rows),
                 {"arch_overrides": _overrides(arch_set)})
    typer.echo(table)


report_app = typer.Typer(no_args_is_help=True, help="Regenerate result reports from run folders.")
app.add_typer(report_app, name="report")


@report_app.command("convergence")
def report_convergence_cmd(
    runs: Annotated[list[Path], typer.Option("--runs", help="Session folder (compare/, audit/, pretrain/, "
                                                            "gpus.txt); repeatable, runs are pooled.")],
    out: Annotated[Path, typer.Option(help="Markdown report; text after <!-- analysis --> is kept.")] = Path(
        "docs/results/convergence.md"),
    plots: Annotated[Path | None, typer.Option(help="PNG folder (default: OUT without .md).")] = None,
    baseline: Annotated[str, typer.Option(help="Method whose final score sets the time-to-reach target.")] = "diffusionnft",
    reference: Annotated[str, typer.Option(help="Method the final-score gap is measured against.")] = "naive_scaling",
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
    threshold: Annotated[list[float] | None, typer.Option(
        help="A held-out partial score to time every method to (repeatable): adds a time-to-score table.")] = None,
) -> None:
    """Held-out score against training time per method: tables, selection fidelity and plots."""
    from orchestration.bench.convergence import write_convergence_report

    try:
        table = write_convergence_report(runs, out, plots, baseline=baseline, reference=reference, title=title,
                                         thresholds=threshold or ())
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    typer.echo(table)
    console.print(f"Wrote {out}")


base_app = typer.Typer(no_args_is_help=True, help="Pack a pretrained base model into a compact 8-bit archive "
                       "(committable, small enough to travel to a GPU machine) and unpack it.")
app.add_typer(base_app, name="base")


@base_app.command("pack")
def base_pack_cmd(
    model: Annotated[Path, typer.Option(help="A diffusers model directory (e.g. runs/pretrain/model).")],
    out: Annotated[Path, typer.Option(help="Archive folder to create.")],
) -> None:
    """int8 rows for the large matrices of the transformer and text encoders, float32 for the rest."""
    from orchestration.base_archive import pack

    try:
        manifest = pack(model, out)
    except (FileNotFoundError, FileExistsError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    console.print(f"Wrote {out}: {size / 1e6:.1f} MB ({manifest['quantized_elements']:,} weights in int8, "
                  f"{manifest['float32_elements']:,} in float32). Unpack with: solrl base unpack --archive {out} --out DIR")


@base_app.command("unpack")
def base_unpack_cmd(
    archive: Annotated[Path, typer.Option(help="An archive folder written by solrl base pack.")],
    out: Annotated[Path, typer.Option(help="Diffusers model directory to create (the base for model.path).")],
) -> None:
    """The float32 diffusers directory of an archive: the benchmark's base, identical on every machine."""
    from orchestration.base_archive import unpack

    try:
        unpack(archive, out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    console.print(f"Wrote {out}; train on it with --set model.path={out}")


aux_app = typer.Typer(no_args_is_help=True, help="Auxiliary diffusion methods (job kinds aux.<method>).")
app.add_typer(aux_app, name="aux")


def _aux_config(method: str, preset: str, overrides: list[str] | None):
    from orchestration.aux_runner import AuxJobError, build_config
    from orchestration.config import ConfigError, apply_override

    data: dict = {"preset": preset}
    try:
        for item in overrides or []:
            apply_override(data, item)
        return build_config(method, data)
    except (AuxJobError, ConfigError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


@aux_app.command("list")
def aux_list() -> None:
    """The auxiliary methods, whether each is implemented, and the brief that specifies it."""
    from workers.aux.registry import AUX_METHODS

    for m in AUX_METHODS.values():
        state = "ready" if m.implemented else "not implemented"
        typer.echo(f"{m.name:18s} {state:16s} {m.title}  [{m.brief}]")


@aux_app.command("show")
def aux_show(
    method: Annotated[str, typer.Argument(help="Method name (solrl aux list).")],
    preset: Annotated[str, typer.Option(help="smoke, quick or full.")] = "quick",
    overrides: SetOpt = None,
) -> None:
    """Print a method's config with the preset and overrides applied."""
    typer.echo(json.dumps(_aux_config(method, preset, overrides).model_dump(mode="json"), indent=2))


@aux_app.command("run")
def aux_run(
    method: Annotated[str, typer.Argument(help="Method name (solrl aux list).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (results.json, report.md, plots).")],
    preset: Annotated[str, typer.Option(help="smoke (seconds), quick (< 5 min on 2 CPU cores) or full.")] = "quick",
    overrides: SetOpt = None,
    in_process: Annotated[bool, typer.Option("--in-process/--ray",
                                             help="Run here, or as a task on the Ray cluster (RAY_ADDRESS or a local one).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run an auxiliary method's experiment and write OUT/results.json, OUT/report.md and plots."""
    _setup_logging(verbose)
    cfg = _aux_config(method, preset, overrides)
    from orchestration.aux_runner import run_aux, run_aux_on_ray

    if in_process:
        record = run_aux(method, cfg, out, show_progress=True)
    else:
        record = run_aux_on_ray(method, cfg, out, show_progress=True)
    console.print(f"aux.{method.removeprefix('aux.')} ({record['preset']}) finished in {record['wall_seconds']:.1f} s; "
                  f"results in {out / 'results.json'}, report in {out / 'report.md'}")


@app.command("build-tiny")
def build_tiny(
    family: Annotated[str, typer.Argument(help="sd3, flux or sana")] = "sd3",
    root: Annotated[Path | None, typer.Option(help="Where to write (default ~/.cache/solrl/tiny).")] = None,
) -> None:
    """Build the tiny random-init model of a family in diffusers layout and print its path."""
    from workers.models.tiny import ensure_tiny_model

    try:
        typer.echo(str(ensure_tiny_model(family, root)))
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


# The job service's commands: serve api, admin token, submit, jobs, status, logs, cancel, metrics, artifacts.
register_service_commands(app)


@app.command()
def pretrain(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (model/, metrics, samples, summary).")],
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its saved training "
                                         "state (raise train.steps / train.max_seconds to train longer).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pretrain the compositional benchmark's base model (configs/compositional/pretrain*.yaml)."""
    _setup_logging(verbose)
    from orchestration.pretrain import PretrainError, load_pretrain_config, run_pretrain

    try:
        cfg = load_pretrain_config(config, overrides or [])
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    try:
        summary = run_pretrain(cfg, out, show_progress=True, resume=resume)
    except PretrainError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))


ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="A diffusers model directory or an RL run directory.")]
SeedsOpt = Annotated[int, typer.Option("--seeds", help="Fixed seeds (images) per prompt.", min=1)]
StepsOpt = Annotated[int, typer.Option("--num-steps", help="Sampling steps.", min=1)]
SolverOpt = Annotated[str, typer.Option("--solver", help="euler or dpm2.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]


def _check_solver(solver: str) -> None:
    if solver not in ("euler", "dpm2"):
        console.print(f"[red]--solver {solver!r}: use euler or dpm2[/red]")
        raise typer.Exit(2)


@app.command()
def sample(
    model: ModelOpt,
    prompts: Annotated[list[str], typer.Option("--prompts", "-p", help="A prompt (repeat for more).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write (a row per prompt).")],
    seeds: SeedsOpt = 4,
    num_steps: StepsOpt = 20,
    solver: SolverOpt = "dpm2",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fixed noise.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Render a grid for a checkpoint and prompts; prompts in the compositional grammar are scored."""
    _check_solver(solver)
    from orchestration.pretrain import sample_checkpoint

    try:
        result = sample_checkpoint(model, prompts, out, seeds_per_prompt=seeds, num_steps=num_steps, solver=solver,
                                   seed=seed, device=device)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))


@app.command("eval")
def eval_checkpoint(
    model: ModelOpt,
    prompt_set: Annotated[str, typer.Option("--prompt-set", help="builtin:compositional or a file of captions.")
                          ] = "builtin:compositional",
    split: Annotated[str | None, typer.Option("--split", help="train, heldout (default) or all.")] = None,
    num_prompts: Annotated[int | None, typer.Option("--num-prompts", help="Evaluate this many prompts, "
                                                    "round-robin over the categories (default: all).")] = None,
    seeds: SeedsOpt = 4,
    num_steps: StepsOpt = 20,
    solver: SolverOpt = "dpm2",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fixed noise.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for eval.json and the grid.")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Score a checkpoint with the rule-based evaluator, per GenEval category (GenEval's overall = their mean)."""
    _check_solver(solver)
    from orchestration.pretrain import captions_of, evaluate_checkpoint
    from workers.compositional.captions import CaptionError

    try:
        captions = captions_of(prompt_set, split, num_prompts)
        result = evaluate_checkpoint(model, captions, seeds_per_prompt=seeds, num_steps=num_steps, solver=solver,
                                     seed=seed, device=device, out_dir=out)
    except (FileNotFoundError, ValueError, CaptionError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
