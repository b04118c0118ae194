"""Atomic checkpoints: written to a temporary directory, then renamed into place.

A checkpoint is ``DIR/checkpoints/iter-000012/`` holding ``learner.pt`` (adapters or weights,
optimizer, EMA, old adapter, step) and ``loop.json`` (next iteration, policy version, fidelity-guard
state, run seed). Data order and every random draw are pure functions of (run seed, iteration), so
these are all the state a resumed run needs to continue with exactly the seeds and prompts it would
have used. ``latest`` names the newest complete checkpoint; a crash mid-write leaves only a
``.tmp-*`` directory, which is ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

LEARNER_FILE = "learner.pt"
LOOP_FILE = "loop.json"


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: Path, iteration: int, learner_state: dict, loop_state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``iteration`` (the number of completed iterations) atomically."""
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter-{iteration:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        torch.save(learner_state, tmp / LEARNER_FILE)
        (tmp / LOOP_FILE).write_text(json.dumps({**loop_state, "iteration": iteration}, indent=2))
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            with f.open("rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pointer_tmp = root / ".latest.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / "latest")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    complete = sorted(p for p in root.glob("iter-*") if (p / LOOP_FILE).is_file())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = checkpoint_root(out_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / LOOP_FILE).is_file() and (path / LEARNER_FILE).is_file() else None


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(learner_state, loop_state) of a checkpoint directory."""
    loop_state = json.loads((path / LOOP_FILE).read_text())
    learner_state = torch.load(path / LEARNER_FILE, map_location="cpu", weights_only=False)
    return learner_state, loop_state
