"""Liveness and readiness: the only endpoints without a token."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.db import ping
from services.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, Problem
from services.api.ray_jobs import RayUnavailable
from services.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (says nothing about the database or Ray)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={
    503: {"description": "The database or Ray is down: a problem document with `database` and `ray` members."}})
async def readyz(request: Request) -> JSONResponse:
    """Ready to take jobs: the database answers and the Ray dashboard (Jobs API) answers."""
    database, ray_state = "ok", "ok"
    try:
        await asyncio.to_thread(ping, request.app.state.engine)
    except Exception as err:  # noqa: BLE001 - any DB failure means not ready
        database = f"unavailable: {type(err).__name__}"
    ray = request.app.state.ray
    if ray is None:
        ray_state = "not configured (no ray_address)"
    else:
        try:
            await asyncio.to_thread(ray.version)
        except RayUnavailable as err:
            ray_state = f"unavailable: {err}"[:300]
    if database == "ok" and ray_state == "ok":
        return JSONResponse(Readiness(status="ready", database=database, ray=ray_state).model_dump())
    problem = Problem(type=PROBLEM_BASE + "not-ready", title="Service Unavailable", status=503,
                      detail=f"database: {database}; ray: {ray_state}")
    # RFC 9457 extension members: which dependency is down, for probes and dashboards.
    return JSONResponse({**problem.model_dump(exclude_none=True), "database": database, "ray": ray_state},
                        status_code=503, media_type=PROBLEM_MEDIA_TYPE)
