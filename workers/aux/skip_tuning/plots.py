"""Figures of the Skip-Tuning report (PNG, headless matplotlib via common/results.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.aux.common.results import new_figure, save_figure


def plot_grids(arms: list[dict[str, Any]], grid: list[float], path: Path) -> Path:
    """FD on seed set A over (rho_top, rho_bottom), one heat map per arm; the chosen cell is boxed."""
    from matplotlib.patches import Rectangle

    fig, axes = new_figure(ncols=len(arms), size=(4.2, 3.6))
    for ax, arm in zip(axes[0], arms, strict=True):
        fd = np.array([[arm["grid_fd"][f"{top}|{bottom}"] for bottom in grid] for top in grid])
        im = ax.imshow(fd, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(grid)), [f"{v:g}" for v in grid])
        ax.set_yticks(range(len(grid)), [f"{v:g}" for v in grid])
        ax.set_xlabel("rho_bottom (innermost)")
        ax.set_ylabel("rho_top (outermost)")
        ax.set_title(f"{arm['sampler']} NFE {arm['nfe']}: FD on set A", fontsize=9)
        i, j = grid.index(arm["rho_top"]), grid.index(arm["rho_bottom"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_loss_vs_rho(rows: list[dict[str, Any]], path: Path) -> Path:
    """Pixel and feature denoising loss vs a uniform rho, one line per timestep, relative to rho = 1."""
    fig, axes = new_figure(ncols=2, size=(4.5, 3.5))
    uniform = [r for r in rows if r["rho_top"] == r["rho_bottom"]]
    for ax, key in zip(axes[0], ("pixel_mse", "feature_mse"), strict=True):
        for t in sorted({r["t"] for r in uniform}):
            pts = sorted((r["rho_top"], r[key]) for r in uniform if r["t"] == t)
            base = next(v for rho, v in pts if rho == 1.0)
            ax.plot([p[0] for p in pts], [p[1] / base for p in pts], marker="o", label=f"t={t}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("rho (uniform: rho_top = rho_bottom)")
        ax.set_ylabel(f"{key} / value at rho=1")
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_samples(images: dict[str, torch.Tensor], path: Path, per_row: int = 8) -> Path:
    """Rows of samples from the same initial noise, one panel per label."""
    fig, axes = new_figure(ncols=len(images), size=(3.2, 3.2))
    for ax, (label, x) in zip(axes[0], images.items(), strict=True):
        x = x[: per_row * per_row].clamp(-1, 1).add(1).div(2)
        n, _, h, w = x.shape
        rows = (n + per_row - 1) // per_row
        canvas = torch.ones(rows * (h + 1), per_row * (w + 1))
        for k in range(n):
            r, c = divmod(k, per_row)
            canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = x[k, 0]
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


def plot_skip_norms(rows: list[dict[str, Any]], path: Path) -> Path:
    """prop_i = ||d_i|| / ||u_i|| per skip (encoder index 0 = outermost), baseline vs tuned."""
    fig, axes = new_figure(size=(5.0, 3.4))
    ax = axes[0][0]
    idx = np.arange(len(rows))
    ax.bar(idx - 0.2, [r["prop_baseline"] for r in rows], 0.4, label="rho = (1, 1)")
    ax.bar(idx + 0.2, [r["prop_tuned"] for r in rows], 0.4, label="tuned rho")
    ax.set_xticks(idx, [str(r["skip"]) for r in rows])
    ax.set_xlabel("skip (0 = outermost, conv_in)")
    ax.set_ylabel("||d_i|| / ||u_i||")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
