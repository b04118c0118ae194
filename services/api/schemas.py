"""Request and response bodies of the REST API.

A job's ``config`` is validated by its kind's pydantic model from ``orchestration.config`` /
``orchestration.jobs`` (the one source of truth); ``GET /v1/kinds`` publishes those models' JSON
schemas. It is typed as an object here so every validation error comes back as ``config.<path>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestration.jobs import JOB_KINDS
from services.api.tables import Job, JobStatus


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Documented as an enum, validated by the registry (whose error lists the kinds and says which are
    # registered but not runnable yet).
    kind: str = Field(description="A registered job kind (GET /v1/kinds), e.g. solrl.", examples=["solrl"],
                      json_schema_extra={"enum": sorted(JOB_KINDS)})
    config: dict[str, Any] = Field(default_factory=dict, description="The kind's config; omitted keys take "
                                                                     "their defaults.")


class JobPublic(BaseModel):
    id: str
    kind: str
    status: JobStatus
    status_message: str
    priority: str = Field(description="rl (scheduled first) or aux.")
    config: dict[str, Any] = Field(description="The validated config, every default filled in.")
    num_gpus: float = Field(description="GPUs the job asks of the cluster (driver and actors).")
    attempt: int = Field(description="1 + how often the job was resubmitted after its Ray cluster lost it.")
    ray_submission_id: str | None = Field(description="The job's id in the Ray dashboard's Jobs view.")
    last_checkpoint_step: int | None = Field(description="Iterations done at the newest checkpoint.")
    owner_id: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(id=job.id, kind=job.kind, status=JobStatus(job.status), status_message=job.status_message,
                   priority=job.priority, config=job.config, num_gpus=job.num_gpus, attempt=job.attempt,
                   ray_submission_id=job.ray_submission_id, last_checkpoint_step=job.last_checkpoint_step,
                   owner_id=job.owner_id, created_at=job.created_at, updated_at=job.updated_at,
                   submitted_at=job.submitted_at, started_at=job.started_at, finished_at=job.finished_at)


class JobList(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null at the end.")


class MetricsPublic(BaseModel):
    job_id: str
    records: list[dict[str, Any]] = Field(description="Lines of the job's metrics.jsonl (non-finite numbers "
                                                      "as null).")


class ArtifactPublic(BaseModel):
    name: str = Field(description="Path relative to the job directory, e.g. samples_final.png.")
    size_bytes: int
    modified_at: datetime


class ArtifactList(BaseModel):
    job_id: str
    data: list[ArtifactPublic]


class KindPublic(BaseModel):
    name: str
    priority: str
    runnable: bool
    description: str
    artifacts: list[str]
    config_schema: dict[str, Any]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    ray: str
