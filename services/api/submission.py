"""Accepting a job: validate, check quotas, then write the job dir and its row in one step.

Nothing is created for a rejected request: every check runs before the first write, and a failure
while writing removes the job dir again (the row is only committed once the dir exists).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from orchestration.jobs import JobSpecError, job_gpus, validate_job
from services.api import idempotency, store
from services.api.job_files import remove_job_dir, write_spec
from services.api.problems import ApiError
from services.api.schemas import JobCreate, JobPublic
from services.api.settings import ApiSettings
from services.api.tables import ApiToken, Job, JobStatus


def accept_job(session: Session, settings: ApiSettings, token: ApiToken, body: JobCreate,
               idempotency_key: str | None) -> tuple[JobPublic, bool]:
    """(the created job, replayed?): replayed is True when an Idempotency-Key returns an earlier job."""
    record = None
    if idempotency_key is not None:
        claim = idempotency.claim(session, token.id, idempotency_key,
                                  idempotency.request_hash(body.model_dump(mode="json")))
        if claim.replay is not None:
            return JobPublic.model_validate(claim.replay[1]), True
        record = claim.record
    try:
        job = _create(session, settings, token, body)
        public = JobPublic.of(job)
        if record is not None:
            idempotency.complete(record, 201, public.model_dump(mode="json"))
        try:
            session.commit()
        except BaseException:
            remove_job_dir(settings.job_root, job.id)
            raise
    except BaseException:
        if record is not None:
            idempotency.release(session, record)
        raise
    return public, False


def _create(session: Session, settings: ApiSettings, token: ApiToken, body: JobCreate) -> Job:
    try:
        kind, cfg = validate_job(body.kind, body.config)
    except JobSpecError as err:
        raise ApiError(422, str(err), slug="invalid-job-spec", title="Invalid job spec", errors=err.errors) from None
    gpus, gpu_field = job_gpus(kind, cfg)
    if gpus > settings.max_gpus_per_job:
        message = f"asks for {gpus:g} GPUs; this service allows at most {settings.max_gpus_per_job:g} per job"
        raise ApiError(422, f"{gpu_field}: {message}", slug="gpu-quota", title="Too many GPUs",
                       errors=[(gpu_field, message)])
    store.lock_owner(session, token)
    active = store.active_count(session, token.id)
    if active >= settings.max_active_jobs_per_token:
        raise ApiError(429, f"this token has {active} unfinished jobs, the most it may have; wait for one to "
                            "finish or cancel one", slug="job-quota", title="Too many active jobs")
    job_id = store.new_job_id()
    config = cfg.model_dump(mode="json")
    write_spec(settings.job_root, job_id, kind.name, config)
    job = Job(id=job_id, owner_id=token.id, kind=kind.name, priority=kind.priority, config=config,
              num_gpus=gpus, status=JobStatus.PENDING, status_message="queued", attempt=1)
    session.add(job)
    try:
        session.flush()
    except BaseException:
        remove_job_dir(settings.job_root, job_id)
        raise
    return job
