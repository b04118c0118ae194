"""What the service refuses, and how: auth, visibility, validation, quotas, body size, artifact names,
Idempotency-Key, listing. Against the real server (uvicorn) in queue-only mode (jobs are accepted and
queued, never run), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.api import idempotency
from services.api.auth import create_token
from services.api.db import make_engine, session_factory
from tests.integration.api.conftest import quick_config
from tests.integration.api.helpers import job_in, wait_for
from tests.integration.api.servers import ApiServer

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="package")
def db_sessions(queue_only: ApiServer) -> Iterator[Callable]:
    engine = make_engine(queue_only.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def new_token(db_sessions: Callable, request: pytest.FixtureRequest) -> Callable[..., tuple[str, str]]:
    """(token id, secret) of a fresh token, made on the server's database (each test gets its own quota)."""
    def make(admin: bool = False) -> tuple[str, str]:
        with db_sessions() as session:
            token, secret = create_token(session, request.node.name[:150], admin=admin)
        return token.id, secret
    return make


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and "type" in body
    return body


def _job_dirs(server: ApiServer) -> set[str]:
    root = server.home / "jobs"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def test_health_needs_no_token(queue_only: ApiServer) -> None:
    with queue_only.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["ray"] == "ok"


def test_no_wrong_or_revoked_token_is_401(queue_only: ApiServer, tokens: dict[str, str]) -> None:
    with queue_only.client(None) as client:
        for path in ("/v1/jobs", "/v1/kinds", "/v1/jobs/some-id", "/v1/jobs/some-id/artifacts/x"):
            response = client.get(path)
            _problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        _problem(client.post("/v1/jobs", json={"kind": "solrl", "config": {}}), 401)
    with queue_only.client("solrl_not-a-token") as client:
        _problem(client.get("/v1/jobs"), 401)
    with queue_only.client(None) as client:
        _problem(client.get("/v1/jobs", headers={"Authorization": f"Basic {tokens['alice']}"}), 401)
    secret = queue_only.create_token("short-lived")
    with queue_only.client(secret) as client:
        assert client.get("/v1/jobs").status_code == 200
        queue_only.solrl("admin", "token", "revoke", "--name", "short-lived")
        _problem(client.get("/v1/jobs"), 401)


def test_another_users_job_is_404_but_admin_sees_it(queue_only: ApiServer, tokens: dict[str, str]) -> None:
    with queue_only.client(tokens["alice"]) as alice:
        job = alice.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()}).json()
    with queue_only.client(tokens["bob"]) as bob:
        for path in ("", "/logs", "/metrics", "/artifacts", "/artifacts/spec.json"):
            body = _problem(bob.get(f"/v1/jobs/{job['id']}{path}"), 404)
            assert job["config"]["seed"] != body  # nothing of the job leaks
        _problem(bob.post(f"/v1/jobs/{job['id']}/cancel"), 404)
        assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs").json()["data"]}
    with queue_only.client(tokens["root"]) as root:
        assert root.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
        assert job["id"] in {j["id"] for j in root.get("/v1/jobs").json()["data"]}


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"kind": "no_such_kind", "config": {}}, "kind", "valid: "),
    ({"kind": "aux.vadd", "config": {"preset": "huge"}}, "config.preset", "smoke"),
    ({"kind": "solrl", "config": {"rollout": {"nope": 1}}}, "config.rollout.nope", "unknown key"),
    ({"kind": "solrl", "config": {"iterations": "many"}}, "config.iterations", "integer"),
    ({"kind": "solrl", "config": {"rollout": {"num_candidates": 4}, "regen": {"num_selected": 8}}},
     "config.regen.num_selected", "rollout.num_candidates"),
    ({"kind": "diffusionnft", "config": {"method": "solrl"}}, "config.method", "diffusionnft"),
    ({"config": {}}, "kind", "required"),
    ({"kind": "solrl", "config": [1, 2]}, "config", "dictionary"),
    ({"kind": "solrl", "config": {}, "extra": 1}, "extra", "not permitted"),
], ids=["unknown-kind", "aux-bad-preset", "unknown-key", "wrong-type", "N<K", "method-mismatch",
        "missing-kind", "config-not-object", "unknown-top-level"])
def test_invalid_spec_is_422_naming_the_field_and_creates_nothing(
        queue_only: ApiServer, new_token: Callable, body: dict, field: str, words: str) -> None:
    _, secret = new_token()
    before = _job_dirs(queue_only)
    with queue_only.client(secret) as client:
        problem = _problem(client.post("/v1/jobs", json=body), 422)
        assert field in [e["field"] for e in problem["errors"]], problem
        assert words in json.dumps(problem)
        assert client.get("/v1/jobs").json()["data"] == []  # no row
    assert _job_dirs(queue_only) == before  # no job dir


def test_gpu_quota_is_422_on_the_gpu_field(queue_only: ApiServer, new_token: Callable) -> None:
    _, secret = new_token()
    config = quick_config(resources={"num_gpus": 2})  # this server allows 1 GPU per job
    with queue_only.client(secret) as client:
        problem = _problem(client.post("/v1/jobs", json={"kind": "solrl", "config": config}), 422)
        assert problem["errors"][0]["field"] == "config.resources.num_gpus"
        assert "at most 1" in problem["errors"][0]["message"]
        config["resources"]["num_gpus"] = 1
        assert client.post("/v1/jobs", json={"kind": "solrl", "config": config}).status_code == 201


def test_active_job_quota_is_429_until_one_finishes(queue_only: ApiServer, new_token: Callable) -> None:
    _, secret = new_token()
    with queue_only.client(secret) as client:
        ids = [client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()}).json()["id"]
               for _ in range(3)]
        problem = _problem(client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()}), 429)
        assert "3 unfinished jobs" in problem["detail"]
        assert len(client.get("/v1/jobs").json()["data"]) == 3  # the refused one left nothing
        client.post(f"/v1/jobs/{ids[0]}/cancel")  # queued, never on Ray: CANCELLING -> CANCELLED
        wait_for(lambda: job_in(client, ids[0], {"CANCELLED"}), 30, "the queued job to be cancelled")
        assert client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()}).status_code == 201


def test_oversized_body_is_413(queue_only: ApiServer, new_token: Callable) -> None:
    _, secret = new_token()
    big = {"kind": "solrl", "config": {"prompts": {"source": "x" * 20000}}}  # the server allows 16 KiB
    with queue_only.client(secret) as client:
        _problem(client.post("/v1/jobs", json=big), 413)
        chunks = iter([json.dumps(big).encode()[i:i + 4096] for i in range(0, 20100, 4096)])
        _problem(client.post("/v1/jobs", content=chunks, headers={"Content-Type": "application/json"}), 413)
        assert client.get("/v1/jobs").json()["data"] == []


def _raw_get(server: ApiServer, path: str, token: str) -> tuple[int, str, bytes]:
    """GET a path byte for byte (httpx would normalise ``..`` away before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def test_artifact_names_leaving_the_job_dir_are_404(queue_only: ApiServer, new_token: Callable) -> None:
    _, secret = new_token()
    with queue_only.client(secret) as client:
        job_id = client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()}).json()["id"]
    job_dir = queue_only.home / "jobs" / job_id
    outside = queue_only.home / "secret.txt"
    outside.write_text("TOP-SECRET")
    (job_dir / "ok.txt").write_text("fine")
    os.symlink("ok.txt", job_dir / "ok-link")  # stays inside: allowed
    os.symlink(outside, job_dir / "escape")
    os.symlink("../../secret.txt", job_dir / "escape-relative")
    os.symlink("/etc/passwd", job_dir / "passwd")
    os.symlink(queue_only.home, job_dir / "outdir")
    os.mkdir(job_dir / "sub")
    base = f"/v1/jobs/{job_id}/artifacts/"
    for name in ("ok.txt", "ok-link", "spec.json"):
        status, _, body = _raw_get(queue_only, base + name, secret)
        assert status == 200 and b"TOP-SECRET" not in body, name
    for name in ("../../secret.txt", "..%2F..%2Fsecret.txt", "%2E%2E/%2E%2E/secret.txt", "sub/../../../secret.txt",
                 "/etc/passwd", "%2Fetc%2Fpasswd", "escape", "escape-relative", "passwd", "outdir/secret.txt",
                 "sub", "sub/", "", "nope.txt", "ok.txt%00.png"):
        status, ctype, body = _raw_get(queue_only, base + name, secret)
        assert status == 404 and ctype == PROBLEM, (name, status, body[:200])
        assert b"TOP-SECRET" not in body and b"root:" not in body
    listed = {a["name"] for a in client_list(queue_only, secret, job_id)}
    assert {"ok.txt", "spec.json"} <= listed and not listed & {"escape", "passwd", "outdir", "ok-link"}


def client_list(server: ApiServer, secret: str, job_id: str) -> list[dict]:
    with server.client(secret) as client:
        return client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]


def test_idempotency_key_replays_rejects_and_reports_in_flight(queue_only: ApiServer, new_token: Callable,
                                                                 db_sessions: Callable) -> None:
    token_id, secret = new_token()
    body = {"kind": "solrl", "config": quick_config()}
    with queue_only.client(secret) as client:
        first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        other = dict(body, config=quick_config(seed=7))
        problem = _problem(client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k-1"}), 422)
        assert problem["errors"][0]["field"] == "Idempotency-Key"
        # A request that failed validation releases its key: the fixed request may reuse it.
        _problem(client.post("/v1/jobs", json={"kind": "nope"}, headers={"Idempotency-Key": "k-2"}), 422)
        assert client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k-2"}).status_code == 201
        # A claim whose request is still being handled (made here on the server's own database).
        with db_sessions() as session:
            idempotency.claim(session, token_id, "k-3", idempotency.request_hash(body))
        _problem(client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-3"}), 409)
        assert len(client.get("/v1/jobs").json()["data"]) == 2  # first and the k-2 job, nothing else


def test_list_filters_and_cursor_pagination(queue_only: ApiServer, new_token: Callable) -> None:
    _, secret = new_token()
    with queue_only.client(secret) as client:
        made = [client.post("/v1/jobs", json=spec).json()["id"] for spec in (
            {"kind": "solrl", "config": quick_config()},
            {"kind": "eval", "config": {"run_dir": "/runs/x"}},
            {"kind": "diffusionnft", "config": {"rollout": {"num_candidates": 4}, "regen": {"num_selected": 4}}})]
        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["data"]] == made[::-1][:2] and page["next_cursor"]
        rest = client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [j["id"] for j in rest["data"]] == [made[0]] and rest["next_cursor"] is None
        assert [j["id"] for j in client.get("/v1/jobs", params={"kind": "eval"}).json()["data"]] == [made[1]]
        assert len(client.get("/v1/jobs", params={"status": "PENDING"}).json()["data"]) == 3
        assert client.get("/v1/jobs", params={"status": "RUNNING"}).json()["data"] == []
        assert _problem(client.get("/v1/jobs", params={"status": "NAPPING"}), 422)["errors"][0]["field"] == "status"
        _problem(client.get("/v1/jobs", params={"limit": 0}), 422)
        eval_job = client.get(f"/v1/jobs/{made[1]}").json()
        assert eval_job["priority"] == "rl" and eval_job["config"]["num_steps"] == 40


def test_unknown_routes_and_methods_are_problems(queue_only: ApiServer, tokens: dict[str, str]) -> None:
    with queue_only.client(tokens["alice"]) as client:
        _problem(client.get("/v1/nothing-here"), 404)
        _problem(client.delete("/v1/jobs"), 405)
        _problem(client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}), 422)
        kinds = {k["name"]: k for k in client.get("/v1/kinds").json()}
        assert kinds["solrl"]["priority"] == "rl" and kinds["aux.vadd"]["priority"] == "aux"
        assert "rollout" in kinds["solrl"]["config_schema"]["properties"]


def test_openapi_documents_v1_and_problems(queue_only: ApiServer) -> None:
    with queue_only.client(None) as client:
        spec = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(spec["paths"])
    create = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert set(create) >= {"201", "401", "409", "413", "422", "429"}
    assert list(create["422"]["content"]) == [PROBLEM]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_cli_submit_with_kind_and_set(queue_only: ApiServer, new_token: Callable, tmp_path: Path) -> None:
    _, secret = new_token()
    job = json.loads(queue_only.solrl("submit", "configs/quickstart.yaml", "--set", "iterations=3",
                                      "--token", secret).stdout)
    assert job["kind"] == "solrl" and job["config"]["iterations"] == 3
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: eval\nconfig:\n  run_dir: /runs/a\n")
    job = json.loads(queue_only.solrl("submit", str(spec), "--set", "num_steps=5", "--token", secret).stdout)
    assert job["kind"] == "eval" and job["config"]["num_steps"] == 5
    bad = queue_only.solrl("submit", "--kind", "solrl", "--set", "rollout.num_candidates=2", "--token", secret,
                           check=False)
    assert bad.returncode == 2 and "config.regen.num_selected" in bad.stderr
    cancelled = json.loads(queue_only.solrl("cancel", job["id"], "--token", secret).stdout)
    assert cancelled["status"] == "CANCELLING"
    no_token = queue_only.solrl("jobs", check=False)
    assert no_token.returncode == 2 and "SOLRL_TOKEN" in no_token.stderr
