"""Resolve a job's model spec to a loaded adapter (tiny family built on demand)."""

from __future__ import annotations

import torch

from orchestration.config import TrainJobConfig
from workers.models.base import ModelAdapter


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_model_path(path: str) -> str:
    if path.startswith("tiny:"):
        from workers.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model(path.split(":", 1)[1]))
    return path


def load_adapter(cfg: TrainJobConfig, device: str | None = None) -> ModelAdapter:
    from workers.models.loading import load_model

    return load_model(
        resolve_model_path(cfg.model.path), height=cfg.model.height, width=cfg.model.width,
        max_sequence_length=cfg.model.max_sequence_length, dtype=getattr(torch, cfg.model.dtype),
        device=resolve_device(device or cfg.model.device),
    )
