"""A small httpx client of the job service's REST API (used by the ``solrl`` client commands)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx


class ApiClientError(RuntimeError):
    """The service answered with a problem document (or could not be reached)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        lines = [f"{status} {problem.get('title', 'error')}: {problem.get('detail', '')}".rstrip(": ")]
        lines += [f"  {e.get('field')}: {e.get('message')}" for e in problem.get("errors") or []]
        super().__init__("\n".join(lines))


class ApiClient:
    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ApiClientError(0, {"title": "service unreachable", "detail": f"{self.http.base_url}: {err}"}) from err
        _raise_for_problem(response)
        return response

    # ---- jobs -------------------------------------------------------------------------------------
    def submit(self, kind: str, config: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._send("POST", "/v1/jobs", json={"kind": kind, "config": config}, headers=headers).json()

    def jobs(self, *, status: str | None = None, kind: str | None = None, limit: int = 50,
             cursor: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items()
                  if v is not None}
        return self._send("GET", "/v1/jobs", params=params).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/jobs/{_seg(job_id)}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/jobs/{_seg(job_id)}/cancel").json()

    # ---- outputs ----------------------------------------------------------------------------------
    def logs(self, job_id: str) -> str:
        return self._send("GET", f"/v1/jobs/{_seg(job_id)}/logs").text

    def follow_logs(self, job_id: str) -> Iterator[tuple[str, str]]:
        """(event, data) pairs of the SSE stream: ``log`` events, then one ``end`` (or ``error``)."""
        try:
            with self.http.stream("GET", f"/v1/jobs/{_seg(job_id)}/logs", params={"follow": "true"},
                                  timeout=httpx.Timeout(30, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_problem(response)
                yield from _parse_sse(response.iter_lines())
        except httpx.HTTPError as err:
            raise ApiClientError(0, {"title": "log stream broke", "detail": str(err)}) from err

    def metrics(self, job_id: str, since_step: int | None = None) -> dict[str, Any]:
        params = {"since_step": since_step} if since_step is not None else {}
        return self._send("GET", f"/v1/jobs/{_seg(job_id)}/metrics", params=params).json()

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/jobs/{_seg(job_id)}/artifacts").json()

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        response = self._send("GET", f"/v1/jobs/{_seg(job_id)}/artifacts/{quote(name, safe='/')}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(response.content)
        return dest


def _seg(value: str) -> str:
    return quote(value, safe="")


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    raise ApiClientError(response.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue  # keep-alive comment
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)
