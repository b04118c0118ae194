"""One real local Ray cluster with Serve for the reward-server tests, and the JPEG reward server on it.

The cluster is package-scoped: started once for every test in tests/integration/reward (Ray plus Serve take
~8 s to start on 2 cores) and shut down before other test packages run. It is private to this process:
``address="local"`` and its own short ``_temp_dir``, so a Ray cluster another session runs on this
machine is never joined, and Serve's HTTP port is a free one rather than 8000. Every replica asks for
0 CPUs so all of them schedule on a 2-core machine.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

pytest.importorskip("ray.serve", reason="the reward server needs Ray Serve: pip install 'ray[serve]'")
pytest.importorskip("httpx", reason="the HTTP tests need httpx")

import ray  # noqa: E402  (after the skip checks above)
from ray import serve  # noqa: E402
from ray.serve.handle import DeploymentHandle  # noqa: E402

from services.reward import start_reward_server  # noqa: E402

# The server under test: two rewards with unequal weights, so totals differ from any one component.
JPEG_WEIGHTS = {"jpeg_compressibility": 1.0, "jpeg_incompressibility": 0.5}
IMAGE_SIZE = (32, 32)
MAX_BATCH_SIZE = 32  # images per reward call
BATCH_WAIT_TIMEOUT_S = 0.3  # long enough for 8 threads' requests to meet on a loaded 2-core machine
MAX_BODY_BYTES = 256 * 1024


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def serve_port() -> Iterator[int]:
    """A private Ray cluster (2 CPUs, no dashboard) with Serve's HTTP proxy on a free loopback port."""
    temp_dir = tempfile.mkdtemp(prefix="rt_", dir="/tmp")  # short: Ray's Unix sockets live under it
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=temp_dir,
            object_store_memory=200 * 2**20,
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            yield port
        finally:
            serve.shutdown()
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def jpeg_server(serve_port: int) -> tuple[DeploymentHandle, str]:
    """(handle, base URL) of a reward server for ``JPEG_WEIGHTS`` that only accepts 32x32 images."""
    return start_reward_server(
        JPEG_WEIGHTS,
        port=serve_port,
        name="jpeg",
        route_prefix="/jpeg",
        num_cpus=0,
        image_size=IMAGE_SIZE,
        max_batch_size=MAX_BATCH_SIZE,
        batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S,
        max_body_bytes=MAX_BODY_BYTES,
    )


@pytest.fixture(scope="package")
def ray_address(serve_port: int) -> str:
    """GCS address of the test cluster, for a subprocess that should join it."""
    return ray.get_runtime_context().gcs_address
