"""Job rows: plain functions, one operation each. Visibility: a token sees its own jobs, an admin all."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.api.problems import ApiError, not_found
from services.api.tables import ACTIVE, TERMINAL, ApiToken, Job, JobStatus, utcnow

MAX_PAGE = 200


def new_job_id() -> str:
    """``j`` + microseconds (fixed-width hex) + randomness: ids sort by creation time."""
    return f"j{time.time_ns() // 1000:014x}{secrets.token_hex(3)}"


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of an attempt: stable, so a retried submit is recognised as a duplicate."""
    return f"solrl-{job_id}" if attempt == 1 else f"solrl-{job_id}-a{attempt}"


def lock_owner(session: Session, owner: ApiToken) -> None:
    """Serialise one token's submissions (row lock on PostgreSQL; SQLite serialises writers anyway)."""
    session.execute(select(ApiToken.id).where(ApiToken.id == owner.id).with_for_update())


def active_count(session: Session, owner_id: str) -> int:
    query = select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE))
    return int(session.scalar(query) or 0)


def visible_job(session: Session, token: ApiToken, job_id: str) -> Job:
    """The job if this token may see it; 404 otherwise (someone else's job does not exist for you)."""
    job = session.get(Job, job_id)
    if job is None or (job.owner_id != token.id and not token.is_admin):
        raise not_found(f"job {job_id!r}")
    return job


def list_visible(session: Session, token: ApiToken, *, status: JobStatus | None, kind: str | None, limit: int,
                 cursor: str | None) -> tuple[Sequence[Job], str | None]:
    """A page of jobs, newest first; the cursor is the id of the last job of the previous page."""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if not token.is_admin:
        query = query.where(Job.owner_id == token.id)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if cursor:
        query = query.where(Job.id < cursor)
    jobs = session.scalars(query).all()
    if len(jobs) > limit:
        return jobs[:limit], jobs[limit - 1].id
    return jobs, None


def request_cancel(session: Session, job: Job) -> Job:
    """PENDING/SUBMITTED/RUNNING -> CANCELLING (the reconciler stops it on Ray); idempotent.

    Compare-and-set on the status read, retried if the reconciler moved the job in between.
    """
    for _ in range(5):
        if job.status in TERMINAL:
            raise ApiError(409, f"job {job.id} already finished ({job.status}); nothing to cancel",
                           slug="job-finished")
        if job.status == JobStatus.CANCELLING:
            return job
        now = utcnow()
        result = session.execute(update(Job).where(Job.id == job.id, Job.status == job.status).values(
            status=JobStatus.CANCELLING, cancel_requested_at=now, updated_at=now, status_message="cancel requested"))
        session.commit()
        session.refresh(job)
        if result.rowcount:  # type: ignore[attr-defined] - a CursorResult for UPDATE
            return job
    raise ApiError(409, f"job {job.id} is changing state; retry the cancel", slug="job-busy")
