"""A tiny Sol-RL job through REST to SUCCEEDED across a killed and restarted API server, and a second
job cancelled mid-run; on SQLite and on PostgreSQL (the ``backend`` parameter of the servers).

The steps share two jobs and run in file order, following one timeline: submit both, kill -9 the
server while the first runs and start it again, cancel the second mid-run, then read the first
job's metrics, logs and artifacts once it has succeeded.
"""

from __future__ import annotations

import json
import threading

import pytest

from orchestration.api_client import ApiClient
from tests.integration.api.conftest import quick_config
from tests.integration.api.helpers import job_in, wait_for
from tests.integration.api.servers import ApiServer

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="package")
def alice(runner: ApiServer) -> str:
    return runner.create_token("alice")


@pytest.fixture(scope="package")
def jobs(runner: ApiServer, alice: str) -> dict[str, dict]:
    """Job 'quick' (2 iterations) and job 'long' (50 iterations, to be cancelled), submitted at once."""
    with runner.client(alice) as client:
        quick = client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config()})
        long = client.post("/v1/jobs", json={"kind": "solrl", "config": quick_config(iterations=50)})
    assert quick.status_code == 201, quick.text
    assert long.status_code == 201, long.text
    return {"quick": quick.json(), "long": long.json()}


def test_submitted_job_reads_back(runner: ApiServer, alice: str, jobs: dict[str, dict]) -> None:
    job = jobs["quick"]
    assert job["kind"] == "solrl" and job["status"] == "PENDING" and job["attempt"] == 1
    assert job["config"]["rollout"]["num_candidates"] == 8 and job["config"]["train"]["lr"] == 0.01
    spec = json.loads((runner.home / "jobs" / job["id"] / "spec.json").read_text())
    assert spec == {"id": job["id"], "kind": "solrl", "config": job["config"]}


def test_kill_and_restart_server_while_job_runs(runner: ApiServer, alice: str, jobs: dict[str, dict]) -> None:
    quick_id = jobs["quick"]["id"]
    with runner.client(alice) as client:
        running = wait_for(lambda: job_in(client, quick_id, {"RUNNING"}), 120, "the quick job to run")
    assert running["ray_submission_id"] == f"solrl-{quick_id}" and running["started_at"]
    runner.kill()  # SIGKILL: no shutdown hook; the job keeps running on Ray
    runner.start()
    with runner.client(alice) as client:
        listed = {j["id"] for j in client.get("/v1/jobs").json()["data"]}
        assert {jobs["quick"]["id"], jobs["long"]["id"]} <= listed  # no row lost
        assert client.get(f"/v1/jobs/{quick_id}").json()["status"] in {"RUNNING", "SUCCEEDED"}


def _follow(runner: ApiServer, token: str, job_id: str, events: list[tuple[str, str]]) -> None:
    with ApiClient(runner.url, token) as client:
        events.extend(client.follow_logs(job_id))


def test_cancel_second_job_mid_run(runner: ApiServer, alice: str, jobs: dict[str, dict]) -> None:
    """Cancelled after its first metrics, while a log follower (SSE) watches it live."""
    long_id = jobs["long"]["id"]
    metrics = runner.home / "jobs" / long_id / "metrics.jsonl"
    events: list[tuple[str, str]] = []
    with runner.client(alice) as client:
        wait_for(lambda: job_in(client, long_id, {"RUNNING"}), 120, "the long job to run")
        follower = threading.Thread(target=_follow, args=(runner, alice, long_id, events), daemon=True)
        follower.start()
        wait_for(lambda: metrics.is_file() and metrics.read_text().strip(), 180, "the long job's first metrics")
        response = client.post(f"/v1/jobs/{long_id}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "CANCELLING"
        again = client.post(f"/v1/jobs/{long_id}/cancel")  # idempotent while it stops
        assert (again.status_code, again.json()["status"]) in {(202, "CANCELLING"), (409, 409)}
        done = wait_for(lambda: job_in(client, long_id, {"CANCELLED", "FAILED", "SUCCEEDED"}), 120,
                        "the long job to stop")
        assert done["status"] == "CANCELLED", done
        assert done["finished_at"] and done["last_checkpoint_step"] is not None  # checkpointed on SIGTERM
        assert done["last_checkpoint_step"] < 50
        finished = client.post(f"/v1/jobs/{long_id}/cancel")
        assert finished.status_code == 409 and finished.headers["content-type"] == "application/problem+json"
    follower.join(60)
    assert not follower.is_alive(), "the SSE log stream did not end with the job"
    assert events[-1] == ("end", json.dumps({"status": "CANCELLED"})), events[-3:]
    assert "orchestration.entrypoint" in "".join(data for kind, data in events if kind == "log")


def test_quick_job_succeeds_after_restart(runner: ApiServer, alice: str, jobs: dict[str, dict]) -> None:
    quick_id = jobs["quick"]["id"]
    with runner.client(alice) as client:
        done = wait_for(lambda: job_in(client, quick_id, {"SUCCEEDED", "FAILED", "CANCELLED"}), 240,
                        "the quick job to finish")
        assert done["status"] == "SUCCEEDED", f"{done}\n{client.get(f'/v1/jobs/{quick_id}/logs').text[-3000:]}"
        assert done["last_checkpoint_step"] == 2 and done["finished_at"] >= done["started_at"]
        succeeded = client.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()["data"]
        assert [j["id"] for j in succeeded] == [quick_id]


def test_metrics_logs_and_sample_grid(runner: ApiServer, alice: str, jobs: dict[str, dict]) -> None:
    quick_id = jobs["quick"]["id"]
    job_dir = runner.home / "jobs" / quick_id
    with runner.client(alice) as client:
        records = client.get(f"/v1/jobs/{quick_id}/metrics").json()["records"]
        train = [r for r in records if "reward_mean" in r]
        assert [r["iteration"] for r in train] == [0, 1]
        assert any("eval_reward_mean" in r for r in records)
        later = client.get(f"/v1/jobs/{quick_id}/metrics", params={"since_step": 1}).json()["records"]
        assert later and all(r["iteration"] >= 1 for r in later)

        log = client.get(f"/v1/jobs/{quick_id}/logs")
        assert log.status_code == 200 and '"method": "solrl"' in log.text  # the entrypoint's closing summary

        names = {a["name"] for a in client.get(f"/v1/jobs/{quick_id}/artifacts").json()["data"]}
        assert {"samples_final.png", "summary.json", "metrics.jsonl", "job.log", "spec.json"} <= names
        grid = client.get(f"/v1/jobs/{quick_id}/artifacts/samples_final.png")
        assert grid.status_code == 200 and grid.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert grid.content == (job_dir / "samples_final.png").read_bytes()


def test_cli_client_commands(runner: ApiServer, alice: str, jobs: dict[str, dict], tmp_path) -> None:
    quick_id = jobs["quick"]["id"]
    env_token = ("--token", alice)
    status = json.loads(runner.solrl("status", quick_id, *env_token).stdout)
    assert status["status"] == "SUCCEEDED"
    follow = runner.solrl("logs", quick_id, "--follow", *env_token)  # exit 0: the job succeeded
    assert '"method": "solrl"' in follow.stdout
    out = tmp_path / "grid.png"
    got = runner.solrl("artifacts", quick_id, "--get", "samples_final.png", "--out", str(out), *env_token)
    assert got.stdout.strip() == str(out) and out.read_bytes()[:4] == b"\x89PNG"
    listing = runner.solrl("jobs", "--json", *env_token)
    assert {j["id"] for j in json.loads(listing.stdout)["data"]} >= {quick_id, jobs["long"]["id"]}
    metrics = runner.solrl("metrics", quick_id, "--since-step", "2", *env_token).stdout.splitlines()
    assert metrics and all(json.loads(line)["iteration"] >= 2 for line in metrics)
