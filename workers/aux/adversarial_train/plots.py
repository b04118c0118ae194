"""Plots of aux.adversarial_train: FD vs NFE, the per-step mismatch, and sample grids."""

from __future__ import annotations

from pathlib import Path

import torch

from workers.aux.common.results import new_figure, save_figure


def plot_fd_vs_nfe(rows: list[dict], path: Path) -> Path:
    """One panel per sampler: digits FD against NFE, one line per model."""
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = new_figure(ncols=len(samplers))
    for ax, sampler in zip(axes[0], samplers, strict=True):
        for model in dict.fromkeys(r["model"] for r in rows):
            pts = sorted((r["nfe"], r["fd"]) for r in rows if r["model"] == model and r["sampler"] == sampler)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="digits FD (lower is better)", title=sampler)
        nfes = sorted({r["nfe"] for r in rows})
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_mismatch(mismatch: dict, path: Path, nfe: int) -> Path:
    """W1 between RMS-norm distributions of sampler x_t and q(x_t) along the trajectory."""
    samplers = list(dict.fromkeys(s for _, s in mismatch))
    fig, axes = new_figure(ncols=len(samplers))
    for ax, sampler in zip(axes[0], samplers, strict=True):
        for (model, s), rows in mismatch.items():
            if s == sampler:
                ax.plot([r["t"] for r in rows], [r["w1_norm"] for r in rows], marker=".", label=model)
        ax.set(xlabel="timestep t (sampler runs right to left)", ylabel="W1(||x_t||/sqrt d): sampler vs q",
               title=f"{sampler}, NFE {nfe}", yscale="log")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_samples(grids: dict[str, torch.Tensor], path: Path, nfe: int) -> Path:
    """First samples of each model (same noise), one row per model."""
    fig, axes = new_figure(ncols=1, nrows=len(grids), size=(8.0, 1.2))
    for ax, (model, x) in zip(axes[:, 0], grids.items(), strict=True):
        row = torch.cat(list(x[:16, 0].clamp(-1, 1)), dim=1)
        ax.imshow(row.numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{model} (NFE {nfe})", fontsize=8)
    return save_figure(fig, path)
