"""A real local Ray cluster (2 CPUs) shared by the runtime tests of this package.

Private to this process (``address="local"``, its own short temp dir), with Ray's Prometheus
endpoint on a free port. Actors reserve fractional CPUs so the whole job fits on 2 cores.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def ray_cluster(tiny_root) -> Iterator[dict]:
    from ray import serve

    temp_dir = tempfile.mkdtemp(prefix="rt_", dir="/tmp")
    metrics_port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
                 object_store_memory=300 * 2**20, _metrics_export_port=metrics_port, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
            yield {"metrics_port": metrics_port}
        finally:
            serve.shutdown()
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
