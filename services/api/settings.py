"""The job service's settings: environment (``SOLRL_*``) and secrets only, read when the app is built.

Nothing here runs at import: ``ApiSettings()`` is constructed by the caller (the CLI, a test) and
passed to ``create_app(settings)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ApiSettings(BaseSettings):
    """Every field can be set as ``SOLRL_<NAME>`` (e.g. ``SOLRL_DATABASE_URL``)."""

    model_config = SettingsConfigDict(env_prefix="SOLRL_", extra="ignore")

    home: Path = Field(Path("~/.solrl"), description="Embedded default: SQLite database and job dirs live here.")
    database_url: str = Field("", description="SQLAlchemy URL; empty = sqlite under `home`. postgresql://... "
                                              "uses psycopg 3.")
    jobs_dir: Path | None = Field(None, description="Job output dirs (default `home`/jobs). The Ray cluster "
                                                    "must see the same path (one machine or a shared volume).")
    ray_address: str | None = Field(None, description="Ray dashboard URL (Jobs API), e.g. http://127.0.0.1:8265.")
    backend: Literal["ray", "kuberay"] = Field(
        "ray", description="ray: the Jobs API at ray_address; kuberay: the Jobs API of the RayCluster "
        "kuberay_cluster_name in kuberay_namespace (its head service), unless ray_address is given.")
    kuberay_namespace: str = Field("solrl", description="Namespace of the RayCluster (backend kuberay).")
    kuberay_cluster_name: str = Field("solrl", description="Name of the RayCluster (backend kuberay).")
    ray_auth_token: SecretStr | None = Field(None, description="Ray's cluster token; default: RAY_AUTH_TOKEN, "
                                                               "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.")
    max_active_jobs_per_token: int = Field(4, ge=1, description="Unfinished jobs one token may have (429 beyond).")
    max_gpus_per_job: float = Field(8, ge=0, description="GPUs one job may ask for (422 beyond).")
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Request body limit (413 beyond).")
    max_active_jobs: int = Field(4, ge=0, description="Jobs on the Ray cluster at once; the rest queue (RL first).")
    max_active_aux_jobs: int = Field(1, ge=0, description="Auxiliary jobs on the cluster at once.")
    max_attempts: int = Field(3, ge=1, description="Submissions of a job whose Ray cluster lost it (resumes "
                                                  "from its checkpoint).")
    reconcile_interval_s: float = Field(2.0, gt=0, description="Seconds between reconciler passes.")
    job_stop_grace_s: int = Field(20, ge=0, description="Seconds a cancelled job gets to checkpoint before "
                                                        "Ray kills it.")
    max_follow_s: float = Field(6 * 3600, gt=0, description="A log stream closes after this; clients reconnect.")
    job_python: str = Field(sys.executable, description="Python that runs the job entrypoint on the cluster.")
    project_root: Path = Field(PROJECT_ROOT, description="Put on the job's PYTHONPATH so the entrypoint imports.")

    @field_validator("home", "jobs_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        # psycopg 3 is the driver we install; a plain postgresql:// URL would ask for psycopg2.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value.removeprefix(prefix)
        return value

    @model_validator(mode="after")
    def _defaults_under_home(self) -> ApiSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'solrl.db'}"
        if self.jobs_dir is None:
            self.jobs_dir = self.home / "jobs"
        if self.backend == "kuberay" and not self.ray_address:
            from orchestration.kuberay import KubeRaySettings

            cluster = KubeRaySettings(namespace=self.kuberay_namespace, cluster_name=self.kuberay_cluster_name)
            self.ray_address = cluster.head_dashboard_url()
        return self

    @property
    def job_root(self) -> Path:
        assert self.jobs_dir is not None  # noqa: S101 - filled by the validator above
        return self.jobs_dir

    def ray_token(self) -> str | None:
        """Ray's own cluster token (sent to the dashboard), looked up the way Ray's CLI does."""
        if self.ray_auth_token is not None:
            return self.ray_auth_token.get_secret_value()
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"].strip()
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
        return path.read_text().strip() if path.is_file() else None
