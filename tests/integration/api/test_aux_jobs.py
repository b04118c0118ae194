"""An auxiliary job through the REST API onto the Ray cluster, like any RL job: submitted as kind
``aux.<method>`` with a preset, run by the entrypoint the service builds, results as artifacts."""

from __future__ import annotations

import pytest

from tests.integration.api.helpers import TERMINAL, wait_for
from tests.integration.api.servers import ApiServer
from workers.aux.registry import AUX_METHODS

pytestmark = pytest.mark.timeout(300)

METHOD = "timestep_opt"  # a smoke run of seconds; every method shares this path (orchestration.aux_runner)


def test_aux_job_runs_through_the_api(runner: ApiServer) -> None:
    if not AUX_METHODS[METHOD].implemented:
        pytest.skip(f"aux.{METHOD} is not implemented yet")
    token = runner.create_token("aux-user")
    with runner.client(token) as client:
        bad = client.post("/v1/jobs", json={"kind": f"aux.{METHOD}", "config": {"preset": "smoke", "sed": 1}})
        assert bad.status_code == 422 and "config.sed" in bad.text
        created = client.post("/v1/jobs", json={"kind": f"aux.{METHOD}", "config": {"preset": "smoke"}})
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["priority"] == "aux" and job["config"]["preset"] == "smoke"
        done = wait_for(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["status"] in TERMINAL and j,
                        240, f"aux.{METHOD} job to finish")
        assert done["status"] == "SUCCEEDED", client.get(f"/v1/jobs/{job['id']}/logs").text[-3000:]
        names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
        assert {"results.json", "report.md", "config.json"} <= names
        results = client.get(f"/v1/jobs/{job['id']}/artifacts/results.json").json()
        assert results["method"] == f"aux.{METHOD}" and results["preset"] == "smoke"
