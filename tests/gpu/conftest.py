"""GPU tests: marked `gpu`, skipped without CUDA, never run in CI. They write what they measure to
$SOLRL_GPU_RESULTS (a directory; default docs/results/gpu) so the numbers can be committed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_record():
    out = Path(os.environ.get("SOLRL_GPU_RESULTS", "docs/results/gpu"))
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    yield records.append
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    (out / "precision_checks.json").write_text(json.dumps({"env": info, "checks": records}, indent=2))
