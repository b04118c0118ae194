"""Fixtures for the deployment checks: the KubeRay CRD schemas (strict) and the quickstart job config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import CRD_DIR, REPO


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    if not (CRD_DIR / "ray.io_rayjobs.yaml").is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (reference data kept beside the repository, in "
                    "../shared/kuberay; see deploy/README.md for the pinned operator version)")
    return CRD_DIR


@pytest.fixture(scope="session")
def raycluster_schema(crd_dir: Path) -> dict:
    from orchestration.kuberay import MAX_RAYCLUSTER_NAME, load_crd_schema, strict_schema

    return strict_schema(load_crd_schema(crd_dir / "ray.io_rayclusters.yaml"), MAX_RAYCLUSTER_NAME)


@pytest.fixture(scope="session")
def rayjob_schema(crd_dir: Path) -> dict:
    from orchestration.kuberay import MAX_RAYJOB_NAME, load_crd_schema, strict_schema

    return strict_schema(load_crd_schema(crd_dir / "ray.io_rayjobs.yaml"), MAX_RAYJOB_NAME)


@pytest.fixture(scope="session")
def quickstart_config() -> dict:
    return yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
