"""``solrl serve api`` with no flags: SQLite under SOLRL_HOME and a Ray head it starts itself, which it
stops on exit; ``--keep-ray`` leaves the head running, and the next start adopts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.api.embedded_ray import dashboard_alive
from tests.integration.api.helpers import wait_for
from tests.integration.api.servers import ROOT, free_port

pytestmark = pytest.mark.timeout(240)


def _serve(home: Path, *flags: str, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """Start ``solrl serve api`` on a free port; retried on another port if that one was taken in between
    (the server starts Ray before it binds, and Ray's own processes take ports from the same range)."""
    for attempt in range(attempts):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("SOLRL_DATABASE_URL", "SOLRL_RAY_ADDRESS", "RAY_ADDRESS")}
        env["SOLRL_HOME"] = str(home)
        log_path = home.parent / f"serve-{port}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it
        proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "api", "--port", str(port),
                                 *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def ready(proc: subprocess.Popen = proc, url: str = url, log_path: Path = log_path) -> bool | str:
            if proc.poll() is not None:
                text = log_path.read_text()
                if "address already in use" in text:
                    return "port-taken"
                raise AssertionError(text[-3000:])
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if wait_for(ready, 150, "the embedded service to be ready", interval_s=1) is True:
            return proc, url
        assert attempt + 1 < attempts, f"no free port after {attempts} attempts"
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(90)


def test_serve_api_without_flags_runs_on_its_own_ray_and_sqlite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc, url = _serve(home, "--keep-ray")
    try:
        head = json.loads((home / "ray-head.json").read_text())
        assert (home / "solrl.db").is_file() and (home / "jobs").is_dir()
        assert httpx.get(f"{url}/readyz").json()["ray"] == "ok"
    finally:
        _stop(proc)
    assert dashboard_alive(head["dashboard_url"])  # --keep-ray: the cluster (and its jobs) outlive the server

    proc, url = _serve(home)  # adopts the running head instead of starting another
    try:
        assert json.loads((home / "ray-head.json").read_text()) == head
    finally:
        _stop(proc)
    deadline = time.monotonic() + 30
    while dashboard_alive(head["dashboard_url"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not dashboard_alive(head["dashboard_url"]) and not (home / "ray-head.json").exists()
