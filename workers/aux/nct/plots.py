"""Figures of the aux.nct experiment: samples per variant, the multiplier trace, consistency vs fidelity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers.aux.common.one_step import OneStepGenerator
from workers.aux.common.results import new_figure, save_figure
from workers.aux.nct.controls import ConditionModel
from workers.aux.nct.evaluate import EvalSet


def _tile(imgs: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(B, 1, H, W) in [-1, 1] -> one (H + pad, B (W + pad)) strip, so a figure is one imshow, not B axes."""
    imgs = torch.nn.functional.pad(imgs.float().cpu().clamp(-1, 1), (0, pad, 0, pad), value=1.0)
    return torch.cat(list(imgs[:, 0]), dim=1)


@torch.no_grad()
def plot_samples(path: Path, cond: ConditionModel, data: EvalSet, generator: OneStepGenerator,
                 grids: dict[str, torch.Tensor]) -> Path:
    """Rows: the condition c (as the adapter sees it), the base at the same z (no control), then f(z, c) per variant."""
    cols = next(iter(grids.values())).shape[0] if grids else 8
    cmap = cond.as_map(data.cond[:cols]).cpu()
    if cond.kind == "class":  # one-hot planes: show the class id as a bar position instead
        c_img = torch.full((cols, 1, *cmap.shape[-2:]), -1.0)
        for j, k in enumerate(data.cond[:cols].tolist()):
            c_img[j, 0, :, int(k) * cmap.shape[-1] // cond.num_classes] = 1.0
    else:
        c_img = cmap[:, :1] * 2 - 1 if cond.kind == "edges" else cmap[:, :1]
    rows = [("c", c_img), ("base f(z)", generator(data.z[:cols]).cpu()), *grids.items()]
    strips = torch.cat([_tile(imgs) for _, imgs in rows], dim=0)
    fig, axes = new_figure(size=(0.9 * cols, 0.9 * len(rows)))
    ax = axes[0][0]
    ax.imshow(strips.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    height = strips.shape[0] / len(rows)
    ax.set_yticks([height * (i + 0.5) for i in range(len(rows))], [name for name, _ in rows], fontsize=7)
    ax.set_xticks([])
    return save_figure(fig, path)


def plot_dual(path: Path, histories: dict[str, Any], xi: float) -> Path:
    """lambda and L_bound against xi over training (NCT's primal-dual vs the fixed multiplier)."""
    fig, axes = new_figure(ncols=2, size=(4.5, 3.2))
    for name in ("nct", "fixed_lambda"):
        if name in histories:
            axes[0][0].plot(histories[name].lam, label=name)
            axes[0][1].semilogy([max(b, 1e-8) for b in histories[name].bound], label=name, lw=0.8)
    axes[0][0].set_title("multiplier lambda")
    axes[0][0].set_xlabel("step")
    axes[0][1].axhline(xi, color="k", ls="--", lw=0.8, label="xi")
    axes[0][1].set_title("L_bound")
    axes[0][1].set_xlabel("step")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_tradeoff(path: Path, rows: list[dict[str, Any]], kind: str) -> Path:
    """Consistency error vs FD to the base generator, one point per variant (lower-left is better)."""
    fig, axes = new_figure()
    ax = axes[0][0]
    for r in rows:
        ax.scatter(r["fd_vs_base"], r["consistency_error"])
        ax.annotate(r["variant"], (r["fd_vs_base"], r["consistency_error"]), fontsize=7)
    ax.set_xlabel("FD to base samples (fidelity, lower better)")
    ax.set_ylabel(f"{kind} consistency error (lower better)")
    ax.set_xscale("symlog")
    return save_figure(fig, path)
