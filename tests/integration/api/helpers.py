"""Polling helpers for the job-service tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def job_in(client: httpx.Client, job_id: str, statuses: set[str]) -> dict | None:
    job = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in statuses else None
