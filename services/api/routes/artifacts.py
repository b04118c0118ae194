"""What a job wrote: its metrics (metrics.jsonl as JSON) and its files (list and download)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from services.api import store
from services.api.deps import CurrentToken, SessionDep, SettingsDep
from services.api.job_files import job_dir, list_artifacts, read_metrics, resolve_artifact
from services.api.problems import not_found
from services.api.routes.responses import JOB_READ
from services.api.schemas import ArtifactList, ArtifactPublic, MetricsPublic

router = APIRouter(prefix="/jobs", tags=["outputs"])


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=JOB_READ)
def get_metrics(job_id: str, token: CurrentToken, session: SessionDep, settings: SettingsDep,
                since_step: Annotated[int | None, Query(ge=0, description="Only records whose iteration is "
                                                                          ">= this.")] = None) -> MetricsPublic:
    """The job's metrics.jsonl: one record per iteration and per evaluation, as written so far."""
    job = store.visible_job(session, token, job_id)
    return MetricsPublic(job_id=job.id, records=read_metrics(job_dir(settings.job_root, job.id), since_step))


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=JOB_READ)
def get_artifacts(job_id: str, token: CurrentToken, session: SessionDep, settings: SettingsDep) -> ArtifactList:
    """Every regular file in the job's directory (names relative to it), as written so far."""
    job = store.visible_job(session, token, job_id)
    files = list_artifacts(job_dir(settings.job_root, job.id))
    return ArtifactList(job_id=job.id, data=[ArtifactPublic(name=n, size_bytes=s, modified_at=m)
                                             for n, s, m in files])


@router.get("/{job_id}/artifacts/{name:path}", response_class=FileResponse, responses={
    **JOB_READ, 200: {"description": "The file, its media type guessed from its name.", "content": {"*/*": {}}}})
def download_artifact(job_id: str, name: str, token: CurrentToken, session: SessionDep,
                      settings: SettingsDep) -> FileResponse:
    """One file of the job dir; names that leave it (``..``, absolute, symlinks out) are 404."""
    job = store.visible_job(session, token, job_id)
    path = resolve_artifact(job_dir(settings.job_root, job.id), name)
    if path is None:
        raise not_found(f"artifact {name!r} of job {job.id}")
    return FileResponse(path, filename=path.name)
