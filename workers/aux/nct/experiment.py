"""Experiment of aux.nct: a control adapter for a frozen one-step digits generator, trained without data.

The brief's smallest faithful experiment (aux_methods_a.md section 2(e), image version): the frozen
generator is distilled here from the shared digits DDPM (``common/one_step.py``), the condition model
is a fixed extractor (layout, Sobel edges or the digits classifier's class), and NCT is compared with
the Table-3 ablations and the naive denoising adapter on the same generator, seeds and budget, scored
on independently drawn (z, c) with one forward pass per sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.aux.common.data import digits
from workers.aux.common.ddpm import DdpmSpec
from workers.aux.common.metrics import digits_classifier
from workers.aux.common.one_step import (
    OneStepGenerator,
    OneStepSpec,
    load_one_step_generator,
    pretrained_one_step_generator,
)
from workers.aux.common.results import Stopwatch, markdown_table
from workers.aux.common.runtime import resolve_device
from workers.aux.nct.config import GeneratorSection, NctConfig
from workers.aux.nct.controls import ConditionModel
from workers.aux.nct.evaluate import evaluate, make_eval_set, sample_grid
from workers.aux.nct.plots import plot_dual, plot_samples, plot_tradeoff
from workers.aux.nct.train import train_adapter

TINY_TEACHER = DdpmSpec(channels=(32, 64), train_steps=100, batch_size=128)
METRICS = ("consistency_error", "fd_vs_base", "fd_vs_test", "coupled_boundary_mse", "edge_energy", "pixel_std")


class PooledDigitsClassifier(nn.Module):
    """The shared 8x8 digits classifier applied to 16x16 images after 2x2 average pooling (its native size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(F.avg_pool2d(x, x.shape[-1] // 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.avg_pool2d(x, x.shape[-1] // 8))


def build_generator(section: GeneratorSection, seed: int, device: torch.device, show_progress: bool) -> OneStepGenerator:
    """The frozen f_theta: the user's directory, or ours distilled (and cached) from the digits DDPM."""
    if section.path is not None:
        return load_one_step_generator(section.path, device)
    teacher = DdpmSpec() if section.teacher == "shared" else TINY_TEACHER
    spec = OneStepSpec(teacher=teacher, ddim_steps=section.ddim_steps, num_pairs=section.num_pairs,
                       train_steps=section.train_steps, seed=seed)
    return pretrained_one_step_generator(spec, device, show_progress).requires_grad_(False)


def param_hash(module: nn.Module) -> str:
    """SHA-256 of every parameter: the frozen-base guard (brief 2(f), "an unfrozen base")."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(cfg: NctConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    """Train every variant, evaluate on independent (z, c), write plots; return results with report_md."""
    device = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    generator = build_generator(cfg.generator, cfg.seed, device, show_progress)
    base_hash = param_hash(generator)
    classifier = PooledDigitsClassifier(digits_classifier(size=8)).to(device)
    size = generator.unet.config.sample_size
    cond = ConditionModel(cfg.control.kind, size, cfg.control.layout_size,
                          classifier=classifier if cfg.control.kind == "class" else None)
    test = digits("test", size=size).images.to(device)
    data = make_eval_set(generator, cond, cfg.eval.num_samples, cfg.seed, test, device)
    rows = [{"variant": "base (no adapter, chance)", **evaluate(None, generator, cond, data, classifier),
             "train_s": 0.0}]
    grids, histories = {}, {}
    for variant in cfg.train.variants:
        clock = Stopwatch()
        model, hist = train_adapter(generator, cond, variant, cfg.nct, cfg.train, cfg.seed, device, show_progress)
        seconds = clock.seconds()
        rows.append({"variant": variant, **evaluate(model, generator, cond, data, classifier), "train_s": seconds})
        grids[variant] = sample_grid(model, cond, data, 8).cpu()
        histories[variant] = hist
    unchanged = param_hash(generator) == base_hash
    if not unchanged:
        raise RuntimeError("the frozen one-step generator's weights changed during adapter training")
    plot_samples(out / "samples.png", cond, data, generator, grids)
    plot_dual(out / "dual.png", histories, cfg.nct.xi)
    plot_tradeoff(out / "tradeoff.png", rows, cfg.control.kind)
    return {
        "control": cfg.control.kind,
        "rows": rows,
        "metrics": {r["variant"]: {k: r[k] for k in METRICS} for r in rows},
        "lambda_final": histories["nct"].lam[-1] if "nct" in histories else None,
        "lambda_trace": histories["nct"].lam if "nct" in histories else None,
        "generator_unchanged": unchanged,
        "report_md": report(cfg, rows, histories),
    }


def report(cfg: NctConfig, rows: list[dict[str, Any]], histories: dict) -> str:
    """The markdown body: setup, table, plots and a reading generated from the numbers."""
    by = {r["variant"]: r for r in rows}
    kind = cfg.control.kind
    err_name = "class error rate (1 - accuracy)" if kind == "class" else "RMS ||h(x) - c||"
    lines = [
        "## Setup", "",
        f"Frozen one-step generator distilled from the shared digits DDPM (DDIM {cfg.generator.ddim_steps} steps); "
        f"control `{kind}`"
        + (f" ({cfg.control.layout_size}x{cfg.control.layout_size} average pooling)" if kind == "layout" else "")
        + f"; adapter = ControlNet-style encoder copy + zero convs; {cfg.train.steps} steps x batch "
        f"{cfg.train.batch_size} per variant, lr {cfg.train.lr}, EMA {cfg.train.ema_decay}; N = {cfg.nct.num_levels} "
        f"levels, d = {cfg.nct.distance}, xi = {cfg.nct.xi}, eta = {cfg.nct.dual_lr}, lambda_0 = {cfg.nct.lambda_init}. "
        "Training calls only the generator and h (no data). Evaluation: "
        f"{cfg.eval.num_samples} independent (z, c) pairs (c from other noises' samples), one forward each.", "",
        f"- consistency_error: {err_name} on independent pairs (lower is better);",
        "- fd_vs_base: Frechet distance (digits-classifier features) to the uncontrolled generator's samples, "
        "the paper's FID convention; fd_vs_test: to held-out test digits;",
        "- coupled_boundary_mse: ||f(z, h(f(z))) - f(z)||^2 on coupled pairs (what the boundary loss fixes);",
        "- edge_energy / pixel_std: sharpness and diversity of the outputs (blur lowers both).", "",
        "## Results", "",
        markdown_table(rows, ["variant", *METRICS, "train_s"]), "",
        "![samples](samples.png)", "", "![dual](dual.png)", "", "![tradeoff](tradeoff.png)", "",
        "## Reading (generated from the numbers above)", "",
    ]
    base = by.get("base (no adapter, chance)")
    for name, row in by.items():
        if name.startswith("base") or base is None:
            continue
        lines.append(f"- `{name}`: consistency error {row['consistency_error']:.4g} (chance {base['consistency_error']:.4g}), "
                     f"FD to base {row['fd_vs_base']:.4g}, coupled boundary MSE {row['coupled_boundary_mse']:.3g}.")
    if "nct" in histories:
        lam = histories["nct"].lam
        bound = histories["nct"].bound
        tail = bound[-max(1, len(bound) // 10):]
        lines.append(f"- lambda went {lam[0]:.3g} -> {lam[-1]:.3g} (min {min(lam):.3g}, max {max(lam):.3g}); "
                     f"L_bound over the last 10% of steps {sum(tail) / len(tail):.3g} vs xi = {cfg.nct.xi}.")
    return "\n".join(lines) + "\n"
