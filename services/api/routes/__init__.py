"""Routers, one module per resource; ``api_router`` is mounted under /v1."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.routes import artifacts, jobs, kinds, logs

api_router = APIRouter()
api_router.include_router(jobs.router)
api_router.include_router(logs.router)
api_router.include_router(artifacts.router)
api_router.include_router(kinds.router)
