"""The job kinds registry, published with each kind's config schema."""

from __future__ import annotations

from fastapi import APIRouter

from orchestration.jobs import JOB_KINDS
from services.api.deps import CurrentToken
from services.api.routes.responses import UNAUTHORIZED
from services.api.schemas import KindPublic

router = APIRouter(prefix="/kinds", tags=["kinds"])


@router.get("", response_model=list[KindPublic], responses=UNAUTHORIZED)
def list_kinds(_token: CurrentToken) -> list[KindPublic]:
    return [KindPublic(name=k.name, priority=k.priority, runnable=k.runnable, description=k.description,
                       artifacts=list(k.artifacts), config_schema=k.config_model.model_json_schema())
            for k in JOB_KINDS.values()]
