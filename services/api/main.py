"""The FastAPI app: ``create_app(settings)`` builds everything from the settings it is given.

At start (lifespan) it migrates the database (``alembic upgrade head``) and starts the reconciler,
which syncs job rows with Ray and submits queued jobs; at shutdown it stops the reconciler. Jobs
keep running on Ray while the service is down, and the next start picks up their true state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.api.db import make_engine, migrate, session_factory
from services.api.limits import BodyLimit
from services.api.problems import install_handlers, problem_openapi
from services.api.ray_jobs import RayJobs
from services.api.reconciler import Reconciler
from services.api.routes import api_router, health
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)
API_VERSION = "1.0.0"


def create_app(settings: ApiSettings) -> FastAPI:
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    ray = RayJobs(settings.ray_address, settings.ray_token()) if settings.ray_address else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, engine)
        settings.job_root.mkdir(parents=True, exist_ok=True)
        task = None
        if ray is not None:
            task = asyncio.create_task(Reconciler(settings, sessions, ray).run(), name="solrl-reconciler")
        else:
            log.warning("no ray_address: jobs are accepted but stay PENDING")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.dispose()

    app = FastAPI(title="solrl job service", version=API_VERSION, lifespan=lifespan,
                  description="Submit and watch solrl jobs on a Ray cluster. Errors are RFC 9457 problems.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.ray = ray
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router, prefix="/v1")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_openapi(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign] - FastAPI's documented way to customise the spec
    return app
