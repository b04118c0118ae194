"""Experiment of aux.sim_recovery: the brief's smallest faithful experiment (aux_methods_b.md 2(e)).

Prior: the shared 16x16 digits DDPM (n = 256). Signals: held-out digits (the DDPM never saw them),
split into validation (choose C_s, C_s' per link, m and arm) and test (reported). For each link
(1-bit, cubic: same code) and m, the four arms see the same A, y and prior; we report PSNR and
cosine similarity to x*, the NFE counted by the prior, and t*.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from workers.aux.common.data import digits
from workers.aux.common.ddpm import DdpmSpec, pretrained_digits_ddpm
from workers.aux.common.results import markdown_table, new_figure, save_figure
from workers.aux.common.runtime import progress, resolve_device
from workers.aux.sim_recovery.config import SimRecoveryConfig
from workers.aux.sim_recovery.estimators import ARMS, Arm, SimHyper
from workers.aux.sim_recovery.evaluation import (
    ArmRun,
    GridChoice,
    Problems,
    cycle_error,
    grid_search,
    held_out_signals,
    make_problems,
    nearest_train_psnr,
    run_arm,
    scores,
)
from workers.aux.sim_recovery.prior import DiffusionPrior, load_prior
from workers.aux.sim_recovery.schedule import t_star

log = logging.getLogger(__name__)
SIGNAL_SHAPE = (1, 16, 16)


def build_prior(cfg: SimRecoveryConfig, device: torch.device, show_progress: bool) -> DiffusionPrior:
    if cfg.prior.path is not None:
        prior = load_prior(cfg.prior.path, device)
    else:
        unet, scheduler = pretrained_digits_ddpm(DdpmSpec(train_steps=cfg.prior.train_steps), device=device,
                                                 show_progress=show_progress)
        prior = DiffusionPrior(unet, scheduler.alphas_cumprod, scheduler.config.prediction_type)
    if prior.sample_shape != SIGNAL_SHAPE:
        raise ValueError(f"prior.path={cfg.prior.path!r} makes samples of shape {prior.sample_shape}, but the signals "
                         f"here are digits of shape {SIGNAL_SHAPE}; use a 1-channel 16x16 DDPM")
    return prior


def _evaluate_link(cfg: SimRecoveryConfig, prior: DiffusionPrior, link: str, val: torch.Tensor, test: torch.Tensor,
                   show_progress: bool) -> tuple[list[dict[str, Any]], dict[int, dict[str, torch.Tensor]]]:
    """All arms for one link: choose (C_s, C_s') per arm on ``val`` (pooled over m), score on ``test`` per m."""
    grid = getattr(cfg.grids, link)
    ms = cfg.measure.m_values
    val_sets = [make_problems(val, m, link, cfg.measure.noise_std, cfg.seed) for m in ms]
    test_sets = {m: make_problems(test, m, link, cfg.measure.noise_std, cfg.seed + 1) for m in ms}
    rows, images, per_image = [], {m: {} for m in ms}, {}
    for arm in progress(ARMS, f"{link}: arms", show_progress):
        choice = grid_search(arm, val_sets, grid.c_s, grid.c_s_prime, cfg.solver.inversion_steps,
                             cfg.solver.sampling_steps, prior, cfg.solver.batch_size)
        for m in ms:
            run = _run_test(arm, test_sets[m], choice.c_s, choice.c_s_prime, cfg, prior)
            s = scores(run.images, test)
            images[m][arm], per_image[(m, arm)] = run.images, s
            rows.append({
                "link": link, "m": m, "arm": arm,
                "psnr": float(s["psnr"].mean()), "psnr_se": float(s["psnr"].std() / len(test) ** 0.5),
                "cosine": float(s["cosine"].mean()), "cosine_se": float(s["cosine"].std() / len(test) ** 0.5),
                "nfe": run.nfe, "c_s": choice.c_s, "c_s_prime": choice.c_s_prime, "t_star": _t_of(arm, choice, m, prior),
                "val_psnr": choice.val_psnr,
            })
    return rows + _paired_rows(link, ms, per_image), images


def _paired_rows(link: str, ms: list[int], per_image: dict) -> list[dict[str, Any]]:
    """SIM-DMIS minus SIM-DMS per test digit (same A, y, x*): the inversion's own effect, with its paired SE."""
    out = []
    for m in ms:
        row: dict[str, Any] = {"link": link, "m": m, "arm": "dmis_minus_dms"}
        for key in ("psnr", "cosine"):
            d = per_image[(m, "sim_dmis")][key] - per_image[(m, "sim_dms")][key]
            row[key], row[f"{key}_se"] = float(d.mean()), float(d.std() / len(d) ** 0.5)
        out.append(row)
    return out


def _t_of(arm: Arm, choice: GridChoice, m: int, prior: DiffusionPrior) -> float:
    """The start time of the arm's DDIM path: t* (DMS, DMIS), 0 (DMFIS), nan (linear: no path)."""
    if arm in ("sim_dms", "sim_dmis"):
        return float(t_star(prior.schedule, choice.c_s, m))
    return 0.0 if arm == "sim_dmfis" else float("nan")


def _run_test(arm: Arm, problems: Problems, c_s: float, c_s_prime: float, cfg: SimRecoveryConfig,
              prior: DiffusionPrior) -> ArmRun:
    n = problems.x_BCHW.shape[0]
    c_s_R = torch.full((n,), 1.0 if math.isnan(c_s) else c_s, dtype=torch.float64)  # nan: arm does not use C_s
    c_s_prime_R = torch.full((n,), c_s_prime, dtype=torch.float64)
    return run_arm(arm, problems, c_s_R, c_s_prime_R, 1, cfg.solver.inversion_steps, cfg.solver.sampling_steps,
                   prior, cfg.solver.batch_size)


def run(cfg: SimRecoveryConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    prior = build_prior(cfg, device, show_progress)
    val, test = held_out_signals(cfg.data.num_val, cfg.data.num_test, SIGNAL_SHAPE[-1])
    val, test = val.to(device), test.to(device)
    train = digits("train", size=SIGNAL_SHAPE[-1]).images

    rows: list[dict[str, Any]] = []  # sorted by (link, m, arm) below
    paired: list[dict[str, Any]] = []
    examples: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for link in cfg.measure.links:
        link_rows, images = _evaluate_link(cfg, prior, link, val, test, show_progress)
        rows += [r for r in link_rows if r["arm"] != "dmis_minus_dms"]
        paired += [r for r in link_rows if r["arm"] == "dmis_minus_dms"]
        examples.update({(link, m): imgs for m, imgs in images.items()})
        log.info("link=%s: %s", link, {(r["arm"], r["m"]): round(r["psnr"], 2) for r in link_rows})

    rows.sort(key=lambda r: (cfg.measure.links.index(r["link"]), r["m"], ARMS.index(r["arm"])))
    memo = _checks(examples, rows, test, train, cfg, prior)
    _plot_curves(rows, cfg, out)
    _plot_examples(examples, test, cfg, out)
    headline = {f"{r['link']}_m{r['m']}_{r['arm']}_{k}": r[k] for r in rows for k in ("psnr", "cosine", "nfe")}
    return {"rows": rows, "dmis_minus_dms": paired, "headline": headline, "checks": memo,
            "n": prior.sample_shape[-1] ** 2, "report_md": _report(rows, paired, memo, cfg)}


def _checks(examples: dict, rows: list[dict[str, Any]], test: torch.Tensor, train: torch.Tensor,
            cfg: SimRecoveryConfig, prior: DiffusionPrior) -> dict[str, Any]:
    """Memorisation (test digits and SIM-DMIS outputs vs their nearest training digit) and the
    inversion cycle error t* -> T -> t* of SIM-DMIS's start points, on the first link at the smallest m."""
    link, m = cfg.measure.links[0], min(cfg.measure.m_values)
    dmis = examples[(link, m)]["sim_dmis"]
    row = next(r for r in rows if r["link"] == link and r["m"] == m and r["arm"] == "sim_dmis")
    hyper = SimHyper(row["c_s"], row["c_s_prime"], cfg.solver.inversion_steps, cfg.solver.sampling_steps)
    cycle = cycle_error(make_problems(test, m, link, cfg.measure.noise_std, cfg.seed + 1), hyper, prior)
    return {"cell": f"{link}, m={m}", "cycle_rel_error": float(cycle.mean()),
            "psnr_test_to_nearest_train": float(nearest_train_psnr(test.cpu(), train).mean()),
            "psnr_dmis_to_x_star": float(scores(dmis, test)["psnr"].mean()),
            "psnr_dmis_to_nearest_train": float(nearest_train_psnr(dmis, train).mean())}


ARM_STYLE = {"linear": ("linear clip(C_s' A^T y/m)", "tab:gray"), "sim_dms": ("SIM-DMS", "tab:orange"),
             "sim_dmfis": ("SIM-DMFIS", "tab:green"), "sim_dmis": ("SIM-DMIS", "tab:blue")}


def _plot_curves(rows: list[dict[str, Any]], cfg: SimRecoveryConfig, out: Path) -> None:
    for metric, ylabel in (("psnr", "PSNR to x* (dB)"), ("cosine", "cosine similarity to x*")):
        fig, axes = new_figure(ncols=len(cfg.measure.links))
        for ax, link in zip(axes[0], cfg.measure.links, strict=True):
            for arm in ARMS:
                pts = sorted((r["m"], r[metric], r[f"{metric}_se"]) for r in rows if r["link"] == link and r["arm"] == arm)
                label, color = ARM_STYLE[arm]
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                            label=label, color=color, capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{link} link, n = 256")
            ax.set_xlabel("measurements m")
            ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=8)
        save_figure(fig, out / f"{metric}_vs_m.png")


def _plot_examples(examples: dict, test: torch.Tensor, cfg: SimRecoveryConfig, out: Path, count: int = 6) -> None:
    m = min(cfg.measure.m_values)
    count = min(count, test.shape[0])
    cols = ["x*", *ARMS]
    fig, axes = new_figure(ncols=len(cols), nrows=len(cfg.measure.links), size=(1.0 * count / 2 + 0.5, 1.2))
    for i, link in enumerate(cfg.measure.links):
        for j, col in enumerate(cols):
            imgs = test.cpu() if col == "x*" else examples[(link, m)][col]
            strip = torch.cat(list(imgs[:count, 0]), dim=1)
            axes[i][j].imshow(strip.numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            axes[i][j].set_title(col if col == "x*" else ARM_STYLE[col][0].split(" ")[0], fontsize=8)
        axes[i][0].set_ylabel(link, fontsize=8)
    fig.suptitle(f"test digits, m = {m}", fontsize=9)
    save_figure(fig, out / "examples.png")


def _report(rows: list[dict[str, Any]], paired: list[dict[str, Any]], memo: dict[str, float],
            cfg: SimRecoveryConfig) -> str:
    table = [{"link": r["link"], "m": r["m"], "arm": ARM_STYLE[r["arm"]][0].split(" ")[0],
              "PSNR (dB)": f"{r['psnr']:.2f} ± {r['psnr_se']:.2f}", "cosine": f"{r['cosine']:.3f} ± {r['cosine_se']:.3f}",
              "NFE": r["nfe"], "C_s": "-" if r["c_s"] != r["c_s"] else f"{r['c_s']:g}", "C_s'": f"{r['c_s_prime']:g}",
              "t*": "-" if r["t_star"] != r["t_star"] else f"{r['t_star']:.0f}"} for r in rows]
    lines = [
        "## Setup",
        "",
        f"- n = 256 (16x16 digits in [-1, 1]); prior: {cfg.prior.path or 'the shared digits DDPM (eps-prediction, T = 1000)'}; "
        f"deterministic DDIM, {cfg.solver.inversion_steps} inversion and {cfg.solver.sampling_steps} sampling steps.",
        f"- y = f(A x* + e), A with i.i.d. N(0, 1) entries (one per digit), noise std {cfg.measure.noise_std}; "
        f"links {', '.join(cfg.measure.links)}; m in {cfg.measure.m_values}.",
        f"- C_s and C_s' chosen per (link, arm) from the grid by mean PSNR on {cfg.data.num_val} validation digits "
        "(pooled over m: one pair per dataset and link, as in the paper); "
        f"metrics on {cfg.data.num_test} other held-out test digits (mean ± standard error).",
        "",
        "## Results",
        "",
        markdown_table(table),
        "SIM-DMIS minus SIM-DMS on the same test digits (paired mean ± standard error): the effect of the "
        "inversion t* -> T itself.",
        "",
        markdown_table([{"link": r["link"], "m": r["m"], "Δ PSNR (dB)": f"{r['psnr']:+.2f} ± {r['psnr_se']:.2f}",
                         "Δ cosine": f"{r['cosine']:+.4f} ± {r['cosine_se']:.4f}"} for r in paired]),
        "![PSNR vs m](psnr_vs_m.png)",
        "",
        "![cosine vs m](cosine_vs_m.png)",
        "",
        "![examples](examples.png)",
        "",
        "## Checks: inversion cycle and memorisation",
        "",
        "cycle_rel_error: mean ||G_{T->t*}(G-dagger_{t*}(x_{t*})) - x_{t*}|| / ||x_{t*}|| of SIM-DMIS's start points "
        "(same DDIM grid both ways; small means the inversion is a real, deterministic inversion). Then the PSNR "
        "of the test digits to their nearest training digit (what copying the training set would score), and of "
        "SIM-DMIS's outputs to x* and to their own nearest training digit:",
        "",
        markdown_table([memo]),
        "",
        "## Reading",
        "",
        *_reading(rows, cfg),
    ]
    return "\n".join(lines) + "\n"


def _reading(rows: list[dict[str, Any]], cfg: SimRecoveryConfig) -> list[str]:
    """Plain statements computed from the numbers (no claims the table does not show)."""
    out = []
    for link in cfg.measure.links:
        by = {(r["arm"], r["m"]): r for r in rows if r["link"] == link}
        ms = sorted(cfg.measure.m_values)
        best = {m: max(ARMS, key=lambda a, m=m: by[(a, m)]["psnr"]) for m in ms}
        gaps = {m: by[("sim_dmis", m)]["psnr"] - by[("linear", m)]["psnr"] for m in ms}
        dms_gap = {m: by[("sim_dmis", m)]["psnr"] - by[("sim_dms", m)]["psnr"] for m in ms}
        order = " > ".join(sorted(ARMS, key=lambda a: -sum(by[(a, m)]["psnr"] for m in ms)))
        ts = [by[("sim_dmis", m)]["t_star"] for m in ms]
        out.append(f"- **{link}**: best arm per m: {', '.join(f'm={m}: {best[m]}' for m in ms)}; arms ordered by mean "
                   f"PSNR over m: {order}. SIM-DMIS minus linear: "
                   f"{', '.join(f'{gaps[m]:+.2f} dB (m={m})' for m in ms)}; SIM-DMIS minus SIM-DMS: "
                   f"{', '.join(f'{dms_gap[m]:+.2f} dB' for m in ms)}. t* of SIM-DMIS over increasing m: "
                   f"{', '.join(f'{t:.0f}' for t in ts)}.")
    return out
