"""Shared processes for the job-service tests: one Ray cluster, PostgreSQL, and API servers per DB backend.

Everything is real and private to this run: a Ray head (``ray start --head`` with the dashboard and
Jobs API) on free ports with its own short temp dir, a throwaway PostgreSQL cluster, and
``solrl serve api`` under uvicorn on loopback. Servers are package-scoped per backend (pytest runs
every SQLite test, then every PostgreSQL one), so each starts once.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.job_submission", reason="the job service needs ray[default]")
pytest.importorskip("sqlalchemy", reason="the job service needs the api extra: pip install -e '.[api]'")
pytest.importorskip("alembic", reason="the job service needs the api extra")
pytest.importorskip("uvicorn", reason="the job service needs the api extra")

from services.api.embedded_ray import LocalRay, start_local_ray  # noqa: E402 - after the skips above
from tests.integration.api.servers import ROOT, ApiServer, PostgresCluster, postgres_bindir  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


def quick_config(**changes: object) -> dict:
    """configs/quickstart.yaml made fast: 2 iterations of 2 prompts, N=8, K=4, no mid-run evaluation."""
    cfg = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["iterations"] = 2
    cfg["prompts"]["per_iteration"] = 2
    cfg["rollout"]["num_candidates"] = 8
    cfg["regen"]["num_selected"] = 4
    cfg["eval"]["every"] = 0
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="package")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRay]:
    """A local Ray head: 8 logical CPUs on a 2-core machine, since jobs' actors reserve fractions."""
    log = tmp_path_factory.mktemp("ray") / "head.log"
    head = start_local_ray(num_cpus=8, object_store_bytes=300 * 2**20, log_path=log)
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="package")
def postgres() -> Iterator[PostgresCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    try:
        cluster = PostgresCluster(bindir)
    except KeyError:
        pytest.skip("running as root but there is no postgres system user to run PostgreSQL as")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="package")
def make_database(backend: str, request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """name -> URL of a fresh, empty database on the backend under test."""
    if backend == "sqlite":
        root = tmp_path_factory.mktemp("sqlite")
        return lambda name: f"sqlite:///{root / name}.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, database_url: str, ray_head: LocalRay,
            **settings: object) -> ApiServer:
    env = {f"SOLRL_{k.upper()}": str(v) for k, v in settings.items()}
    server = ApiServer(home=tmp_path_factory.mktemp(name), database_url=database_url,
                       ray_address=ray_head.dashboard_url, env=env)
    server.start()
    return server


@pytest.fixture(scope="package")
def runner(tmp_path_factory: pytest.TempPathFactory, backend: str, make_database: Callable[[str], str],
           ray_head: LocalRay, tiny_root: Path) -> Iterator[ApiServer]:
    """A server that runs jobs on Ray (the reconciler polls twice a second).

    Jobs find the tiny model through SOLRL_TINY_ROOT (set by ``tiny_root``, passed on by the service);
    it is built here once, not raced by two jobs starting together.
    """
    from workers.models.tiny import ensure_tiny_model

    ensure_tiny_model("sd3", tiny_root)
    server = _server(tmp_path_factory, f"runner-{backend}", make_database(f"runner_{backend}"), ray_head,
                     reconcile_interval_s=0.5, job_stop_grace_s=20)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def queue_only(tmp_path_factory: pytest.TempPathFactory, backend: str, make_database: Callable[[str], str],
               ray_head: LocalRay) -> Iterator[ApiServer]:
    """A server that accepts and queues but never submits (max_active_jobs 0), with tight quotas."""
    server = _server(tmp_path_factory, f"queue-{backend}", make_database(f"queue_{backend}"), ray_head,
                     max_active_jobs=0, max_active_jobs_per_token=3, max_gpus_per_job=1, max_body_bytes=16384)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def tokens(queue_only: ApiServer) -> dict[str, str]:
    """alice and bob (users) and root (admin) on the queue-only server."""
    return {"alice": queue_only.create_token("alice"), "bob": queue_only.create_token("bob"),
            "root": queue_only.create_token("root", admin=True)}
