"""Experiment of aux.skip_tuning (placeholder until the method lands)."""

from __future__ import annotations

from pathlib import Path


def run(cfg, out: Path, *, show_progress: bool = True) -> dict:
    raise NotImplementedError("aux.skip_tuning is not implemented yet")
