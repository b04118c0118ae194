"""What a run leaves for people to look at: sample grids and the reward curve (PNG)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from PIL import Image


def save_image_grid(images_B3HW: torch.Tensor, path: Path, columns: int | None = None, scale: int = 4) -> Path:
    """Tile images in [0, 1] into one PNG (nearest-neighbour upscaled so tiny images are visible)."""
    b, _, h, w = images_B3HW.shape
    columns = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / columns)
    pad = 2
    grid = Image.new("RGB", (columns * (w * scale + pad) + pad, rows * (h * scale + pad) + pad), (255, 255, 255))
    arrays = (images_B3HW.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, array in enumerate(arrays):
        tile = Image.fromarray(array).resize((w * scale, h * scale), Image.NEAREST)
        r, c = divmod(i, columns)
        grid.paste(tile, (pad + c * (w * scale + pad), pad + r * (h * scale + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def save_reward_curve(records: list[dict], path: Path, title: str) -> Path | None:
    """Training (BF16) reward per iteration and held-out evaluation reward where measured.

    Returns None (and logs why) where matplotlib is not installed, e.g. a slim GPU image.
    """
    try:
        import matplotlib
    except ImportError:
        logging.getLogger(__name__).warning("matplotlib is not installed: no %s", path.name)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    train = [(r["iteration"], r["reward_mean"]) for r in records if "reward_mean" in r]
    if train:
        ax.plot(*zip(*train, strict=True), label="train reward (BF16 samples)", color="tab:blue")
    proxy = [(r["iteration"], r["proxy_reward_mean"]) for r in records if "proxy_reward_mean" in r]
    if proxy:
        ax.plot(*zip(*proxy, strict=True), label="stage-1 pool reward", color="tab:gray", alpha=0.6)
    evals = [(r["iteration"], r["eval_reward_mean"]) for r in records if "eval_reward_mean" in r]
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="held-out reward (eval)", color="tab:orange")
    ax.set_xlabel("iteration")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
