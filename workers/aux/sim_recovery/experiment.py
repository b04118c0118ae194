"""Experiment of aux.sim_recovery (placeholder until the method lands)."""

from __future__ import annotations

from pathlib import Path


def run(cfg, out: Path, *, show_progress: bool = True) -> dict:
    raise NotImplementedError("aux.sim_recovery is not implemented yet")
