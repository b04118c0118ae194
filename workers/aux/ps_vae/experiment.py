"""Experiment of aux.ps_vae (placeholder until the method lands)."""

from __future__ import annotations

from pathlib import Path


def run(cfg, out: Path, *, show_progress: bool = True) -> dict:
    raise NotImplementedError("aux.ps_vae is not implemented yet")
