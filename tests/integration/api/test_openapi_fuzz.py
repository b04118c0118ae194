"""Schemathesis against the service's own OpenAPI: no 5xx, and every response matches its documentation
(status code, content type, body schema). In-process (ASGI) with a real token on a real SQLite database;
the app's lifespan runs (migrations, reconciler), with max_active_jobs 0 so generated jobs never run.
Bounded: a few examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (dev extra)")

from fastapi import FastAPI  # noqa: E402 - after the skip above
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.auth import create_token  # noqa: E402
from services.api.embedded_ray import LocalRay  # noqa: E402
from services.api.main import create_app  # noqa: E402
from services.api.settings import ApiSettings  # noqa: E402

EXAMPLES = 12  # per operation: enough to hit each status path, and the test stays under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, ray_head: LocalRay) -> Iterator[tuple[FastAPI, str]]:
    api_settings = ApiSettings(home=tmp_path_factory.mktemp("fuzz"), ray_address=ray_head.dashboard_url,
                               max_active_jobs=0, max_active_jobs_per_token=1000, max_body_bytes=64 * 1024)
    app = create_app(api_settings)
    with TestClient(app):  # enters the lifespan
        with app.state.sessions() as session:
            _, secret = create_token(session, "fuzzer")
        yield app, secret


@pytest.mark.timeout(240)
def test_api_matches_its_openapi(fuzz_app: tuple[FastAPI, str]) -> None:
    """Every operation of /openapi.json, a few generated requests each (schemathesis' pytest plugin is
    not used: its lazy fixture loader does not run under pytest 9)."""
    app, secret = fuzz_app
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {secret}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # noqa: ANN001 - a schemathesis Case
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()


@pytest.mark.timeout(60)
def test_job_endpoints_match_openapi_for_a_real_job(fuzz_app: tuple[FastAPI, str]) -> None:
    """Generated requests mostly miss (unknown ids: 404, random configs: 422); here a valid job is created
    and every job operation is called with its id, each response checked against the spec."""
    app, secret = fuzz_app
    headers = {"Authorization": f"Bearer {secret}"}
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = {op.label: op for op in (result.ok() for result in api.get_all_operations())}
    create = operations["POST /v1/jobs"].Case(body={"kind": "eval", "config": {"run_dir": "/runs/x"}})
    created = create.call_and_validate(headers=headers, checks=CHECKS)
    assert created.status_code == 201
    job_id = created.json()["id"]
    seen = set()
    for label, operation in operations.items():
        if "{job_id}" not in operation.path:
            continue
        params = {"job_id": job_id, **({"name": "spec.json"} if "{name}" in operation.path else {})}
        response = operation.Case(path_parameters=params).call_and_validate(headers=headers, checks=CHECKS)
        assert response.status_code in (200, 202), (label, response.status_code)
        seen.add(label)
    assert len(seen) == 6  # get, cancel, logs, metrics, artifacts, one artifact
