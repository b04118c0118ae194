"""Jobs: create (with Idempotency-Key), read, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from services.api import store
from services.api.deps import CurrentToken, SessionDep, SettingsDep
from services.api.routes.responses import INVALID, JOB_READ, TOO_LARGE, UNAUTHORIZED
from services.api.schemas import JobCreate, JobList, JobPublic
from services.api.submission import accept_job
from services.api.tables import JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                              description="Same key and body: the first response is replayed.")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic, responses={
    **UNAUTHORIZED, **INVALID, **TOO_LARGE,
    409: {"description": "A request with this Idempotency-Key is still in flight."},
    429: {"description": "This token has as many unfinished jobs as it may."}})
def create_job(body: JobCreate, token: CurrentToken, session: SessionDep, settings: SettingsDep,
               response: Response, idempotency_key: IdempotencyKey = None) -> JobPublic:
    """Queue a job of a registered kind; the service builds its Ray entrypoint from the kind."""
    job, replayed = accept_job(session, settings, token, body, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job


@router.get("", response_model=JobList, responses={**UNAUTHORIZED, **INVALID})
def list_jobs(token: CurrentToken, session: SessionDep,
              status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              kind: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE)] = 50,
              cursor: Annotated[str | None, Query(max_length=64)] = None) -> JobList:
    """Jobs newest first, filtered by status and kind; follow ``next_cursor`` for older pages."""
    jobs, next_cursor = store.list_visible(session, token, status=status_, kind=kind, limit=limit, cursor=cursor)
    return JobList(data=[JobPublic.of(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=JOB_READ)
def get_job(job_id: str, token: CurrentToken, session: SessionDep) -> JobPublic:
    return JobPublic.of(store.visible_job(session, token, job_id))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic, responses={
    **JOB_READ, 409: {"description": "The job already finished."}})
def cancel_job(job_id: str, token: CurrentToken, session: SessionDep) -> JobPublic:
    """Ask for the job to stop: it moves to CANCELLING now and to CANCELLED once Ray has stopped it."""
    job = store.request_cancel(session, store.visible_job(session, token, job_id))
    return JobPublic.of(job)
