"""Experiment of aux.nct (placeholder until the method lands)."""

from __future__ import annotations

from pathlib import Path


def run(cfg, out: Path, *, show_progress: bool = True) -> dict:
    raise NotImplementedError("aux.nct is not implemented yet")
