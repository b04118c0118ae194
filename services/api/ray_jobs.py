"""The Ray Jobs API, as the service uses it (``JobSubmissionClient`` against the dashboard).

Ray 2.60 turns token auth on by default, but its client only attaches the token when
``RAY_AUTH_MODE=token`` is set in *its* process; the service sends ``Authorization: Bearer`` itself,
with the token from settings, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.

Every call is synchronous (the SDK uses ``requests``): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from orchestration.jobs import Resources

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """The Ray dashboard could not be reached, or answered with an error."""


@dataclass(frozen=True)
class RayJobInfo:
    submission_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str
    metadata: dict[str, str]


def _normalize(address: str) -> str:
    return address if "://" in address else f"http://{address}"


class RayJobs:
    """A thin, thread-safe wrapper that (re)connects lazily: the cluster may come and go."""

    def __init__(self, address: str, token: str | None) -> None:
        self.address = _normalize(address)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._lock = threading.Lock()
        self._client: Any = None

    def _sdk(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is None:
                try:
                    self._client = JobSubmissionClient(self.address, headers=dict(self._headers))
                except Exception as err:  # noqa: BLE001 - connection, auth or version errors alike
                    raise RayUnavailable(f"Ray dashboard at {self.address}: {err}") from err
            return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._sdk()
        try:
            return getattr(client, method)(*args, **kwargs)
        except RuntimeError:
            raise  # Ray answered: the caller decides what its error means
        except Exception as err:  # noqa: BLE001 - requests' connection errors: reconnect next time
            with self._lock:
                self._client = None
            raise RayUnavailable(f"Ray dashboard at {self.address}: {err}") from err

    def version(self) -> str:
        try:
            return str(self._call("get_version"))
        except RuntimeError as err:
            raise RayUnavailable(str(err)) from err

    def list_jobs(self) -> dict[str, RayJobInfo]:
        """Submitted jobs by submission id (drivers started with ray.init have none and are skipped)."""
        try:
            jobs = self._call("list_jobs")
        except RuntimeError as err:
            raise RayUnavailable(str(err)) from err
        return {j.submission_id: RayJobInfo(j.submission_id, str(getattr(j.status, "value", j.status)),
                                            j.message or "", dict(j.metadata or {}))
                for j in jobs if j.submission_id}

    def submit(self, *, submission_id: str, entrypoint: str, resources: Resources, env_vars: dict[str, str],
               metadata: dict[str, str]) -> bool:
        """Submit; False when Ray already has this submission id (a retry after a crash: it is ours)."""
        try:
            self._call("submit_job", entrypoint=entrypoint, submission_id=submission_id,
                       runtime_env={"env_vars": env_vars}, metadata=metadata,
                       entrypoint_num_cpus=resources.num_cpus, entrypoint_num_gpus=resources.num_gpus,
                       entrypoint_resources=dict(resources.custom) or None)
        except RuntimeError as err:
            # Ray answers a duplicate submission_id with HTTP 500 "... already exists".
            if "already exists" in str(err):
                return False
            raise RayUnavailable(f"Ray refused submission {submission_id}: {err}") from err
        return True

    def stop(self, submission_id: str) -> None:
        try:
            self._call("stop_job", submission_id)
        except RuntimeError as err:
            log.warning("stopping Ray job %s: %s", submission_id, err)

    def logs(self, submission_id: str) -> str | None:
        """The driver's full log, or None if Ray does not know the job."""
        try:
            return str(self._call("get_job_logs", submission_id))
        except RuntimeError as err:
            if "404" in str(err) or "does not exist" in str(err):
                return None
            raise RayUnavailable(str(err)) from err

    async def tail(self, submission_id: str) -> AsyncIterator[str]:
        """Log chunks as the driver writes them (Ray's websocket); ends when the job ends."""
        client = self._sdk()
        async for chunk in client.tail_job_logs(submission_id):
            yield chunk
