"""The embedded default's Ray cluster: a local head started with ``ray start --head --block``.

Ray Serve (the jobs' reward servers run on it) is started on the head right away, bound to a free
loopback port: jobs then find it running. Otherwise two jobs that start together would both try to
start Serve, and the second fails (``ActorAlreadyExistsError`` for SERVE_CONTROLLER_ACTOR).

It runs as its own process group (not inside the API process), so killing or restarting the API
server leaves the cluster, and the jobs on it, running; the restarted server finds the head again
through ``state_file`` and adopts it. Every port is a free one and the temp dir is private and
short (Ray's Unix sockets live under it), so several clusters can share a machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

_PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--runtime-env-agent-port", "--metrics-export-port", "--ray-client-server-port",
               "--node-manager-port", "--object-manager-port")


class RayStartError(RuntimeError):
    """The local Ray head did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dashboard_alive(url: str) -> bool:
    """The dashboard answers (401 counts: token auth is on, and the server is up)."""
    try:
        return httpx.get(f"{url}/api/version", timeout=2).status_code in (200, 401)
    except httpx.HTTPError:
        return False


@dataclass
class LocalRay:
    dashboard_url: str
    pid: int
    temp_dir: Path
    state_file: Path | None = None

    def stop(self, timeout_s: float = 30) -> None:
        """SIGINT to the head's process group: ``ray start --block`` then shuts down the Ray processes it
        started. Once it has exited (or after ``timeout_s``), whatever is left of the group (idle
        workers, actors on their way out) is killed."""
        try:
            os.killpg(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        else:
            deadline = time.monotonic() + timeout_s
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(self.pid):
                log.warning("Ray head %d did not stop on SIGINT within %gs; killing it", self.pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            _alive(self.pid)  # reap it if it is our child
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Is the process running? Reaps it first if it is our exited child (a zombie still 'exists')."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:  # not our child (an adopted head): its parent reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_serve(temp_dir: Path, env: dict[str, str], out: object) -> None:
    """``serve start`` against the new head (its GCS address is in ``temp_dir/ray_current_cluster``)."""
    address_file = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + 30
    while not address_file.is_file():
        if time.monotonic() > deadline:
            raise RayStartError(f"{address_file} was never written")
        time.sleep(0.2)
    cmd = [sys.executable, "-m", "ray.serve.scripts", "start", "--address", address_file.read_text().strip(),
           "--http-host", "127.0.0.1", f"--http-port={free_port()}", f"--grpc-port={free_port()}"]
    # `ray start` turns token auth on unless RAY_AUTH_MODE says otherwise, but a driver only sends the
    # token (from ~/.ray/auth_token) when told to.
    env = {"RAY_AUTH_MODE": "token", **env}
    code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=120).returncode
    if code != 0:
        raise RayStartError(f"`serve start` exited with {code}")


def adopt(state_file: Path) -> LocalRay | None:
    """The head a previous server started, if it is still up."""
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    head = LocalRay(data["dashboard_url"], int(data["pid"]), Path(data["temp_dir"]), state_file)
    return head if dashboard_alive(head.dashboard_url) else None


def start_local_ray(*, num_cpus: float | None = None, num_gpus: float | None = None,
                    object_store_bytes: int | None = None, log_path: Path | None = None,
                    state_file: Path | None = None, timeout_s: float = 90) -> LocalRay:
    """Start a head node with the dashboard (the Jobs API) on a free loopback port and wait for it."""
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="solrl-ray-", dir="/tmp"))
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           *(f"{flag}={port}" for flag, port in ports.items())]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus:g}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus:g}")
    if object_store_bytes is not None:
        cmd.append(f"--object-store-memory={object_store_bytes}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # never join some other cluster
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)  # own process group: survives the API server
    head = LocalRay(f"http://127.0.0.1:{ports['--dashboard-port']}", process.pid, temp_dir, state_file)
    deadline = time.monotonic() + timeout_s
    while not dashboard_alive(head.dashboard_url):
        if process.poll() is not None or time.monotonic() > deadline:
            head.stop(timeout_s=5)
            where = f"; see {log_path}" if log_path else ""
            raise RayStartError(f"the local Ray head did not start within {timeout_s:g}s{where}")
        time.sleep(0.5)
    try:
        _start_serve(temp_dir, env, out)
    except (RayStartError, subprocess.TimeoutExpired) as err:
        head.stop(timeout_s=5)
        raise RayStartError(f"Ray Serve did not start on the local head: {err}") from err
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"dashboard_url": head.dashboard_url, "pid": head.pid,
                                          "temp_dir": str(temp_dir)}))
    log.info("local Ray head up: dashboard %s (temp dir %s)", head.dashboard_url, temp_dir)
    return head
