"""The app without a Ray cluster (in-process): health, readiness and the problem shape of errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the job service needs the api extra")

from fastapi.testclient import TestClient  # noqa: E402

from services.api.main import create_app  # noqa: E402
from services.api.settings import ApiSettings  # noqa: E402


def test_not_ready_without_ray_is_a_problem_naming_the_dependency(tmp_path: Path) -> None:
    with TestClient(create_app(ApiSettings(home=tmp_path))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        response = client.get("/readyz")
        assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["database"] == "ok" and body["ray"].startswith("not configured") and body["status"] == 503
        missing = client.get("/v1/nowhere")
        assert missing.status_code == 404 and missing.json()["title"] == "Not Found"
    assert (tmp_path / "solrl.db").is_file() and (tmp_path / "jobs").is_dir()  # the embedded default's layout


def test_postgres_urls_use_psycopg3(tmp_path: Path) -> None:
    url = ApiSettings(home=tmp_path, database_url="postgresql://u:p@db:5432/solrl").database_url
    assert url == "postgresql+psycopg://u:p@db:5432/solrl"
