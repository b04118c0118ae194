"""Shared fixtures: the tiny model family, built once per session into a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(os.environ.get("SOLRL_TINY_ROOT", tmp_path_factory.mktemp("tiny")))
    os.environ["SOLRL_TINY_ROOT"] = str(root)  # pipelines built by the code under test reuse it
    return root


@pytest.fixture(scope="session")
def tiny_paths(tiny_root: Path) -> dict[str, Path]:
    from workers.models.tiny import TINY_FAMILIES, ensure_tiny_model

    return {family: ensure_tiny_model(family, tiny_root) for family in TINY_FAMILIES}
