"""A job's driver log: all of it, or followed live as server-sent events (``?follow=true``).

SSE events: ``log`` (data: the new lines), ``end`` (data: {"status": ...}) when the job has ended,
``error`` when the log cannot be followed; comment lines keep the stream alive while the job waits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from services.api import store
from services.api.deps import CurrentToken, RayDep, SessionDep, SettingsDep
from services.api.job_files import LOG_FILE, job_dir
from services.api.ray_jobs import RayJobs, RayUnavailable
from services.api.routes.responses import JOB_READ
from services.api.settings import ApiSettings
from services.api.tables import TERMINAL, Job, JobStatus

router = APIRouter(prefix="/jobs", tags=["outputs"])


def full_log(job: Job, settings: ApiSettings, ray: RayJobs | None) -> str:
    """The saved log of a finished job, else Ray's; empty before the job reached Ray."""
    saved = job_dir(settings.job_root, job.id) / LOG_FILE
    if job.status in TERMINAL and saved.is_file():
        return saved.read_text(errors="replace")
    if ray is None or job.ray_submission_id is None:
        return ""
    try:
        return ray.logs(job.ray_submission_id) or ""
    except RayUnavailable:
        return saved.read_text(errors="replace") if saved.is_file() else ""


def _event(name: str, data: str) -> str:
    lines = data.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


@router.get("/{job_id}/logs", response_class=PlainTextResponse, response_model=None, responses={
    **JOB_READ,
    200: {"description": "The log (text/plain), or with follow=true an SSE stream (text/event-stream).",
          "content": {"text/plain": {"schema": {"type": "string"}},
                      "text/event-stream": {"schema": {"type": "string"}}}}})
def get_logs(job_id: str, request: Request, token: CurrentToken, session: SessionDep, settings: SettingsDep,
             ray: RayDep, follow: Annotated[bool, Query(description="Stream new lines as SSE until the job ends.")]
             = False) -> PlainTextResponse | StreamingResponse:
    job = store.visible_job(session, token, job_id)
    if not follow:
        return PlainTextResponse(full_log(job, settings, ray))
    stream = _follow(request, job.id, settings, ray)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _follow(request: Request, job_id: str, settings: ApiSettings, ray: RayJobs | None) -> AsyncIterator[str]:
    deadline = time.monotonic() + settings.max_follow_s
    sessions = request.app.state.sessions

    def load() -> Job:
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None  # noqa: S101 - rows are never deleted
            return job

    job = await asyncio.to_thread(load)
    # Wait for the job to reach Ray (or end without getting there).
    while job.status not in TERMINAL and (job.status == JobStatus.PENDING or job.ray_submission_id is None):
        if time.monotonic() > deadline or await request.is_disconnected():
            return
        yield ": waiting for the job to start\n\n"
        await asyncio.sleep(settings.reconcile_interval_s)
        job = await asyncio.to_thread(load)
    if job.status in TERMINAL or ray is None or job.ray_submission_id is None:
        text = await asyncio.to_thread(full_log, job, settings, ray)
        if text:
            yield _event("log", text)
        yield _event("end", json.dumps({"status": job.status}))
        return
    try:
        async for chunk in ray.tail(job.ray_submission_id):
            yield _event("log", chunk)
            if time.monotonic() > deadline:
                return
    except (RayUnavailable, RuntimeError, OSError) as err:
        yield _event("error", json.dumps({"detail": f"log stream broke: {err}"}))
        return
    # Ray's stream ends with the job; the row catches up within a reconciler pass or two.
    for _ in range(5):
        job = await asyncio.to_thread(load)
        if job.status in TERMINAL:
            break
        await asyncio.sleep(settings.reconcile_interval_s)
    yield _event("end", json.dumps({"status": job.status}))
