"""FastAPI dependencies, each defined once as an ``Annotated`` alias that handlers take as a parameter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.api.auth import authenticate
from services.api.problems import ApiError
from services.api.ray_jobs import RayJobs
from services.api.settings import ApiSettings
from services.api.tables import ApiToken

_bearer = HTTPBearer(auto_error=False, description="A token from `solrl admin token create`.")


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_ray(request: Request) -> RayJobs | None:
    return request.app.state.ray


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RayDep = Annotated[RayJobs | None, Depends(get_ray)]


def get_token(session: SessionDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiToken:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(401, "send Authorization: Bearer <token> (create one with `solrl admin token create`)",
                       slug="unauthenticated", headers=challenge)
    token = authenticate(session, credentials.credentials)
    if token is None:
        raise ApiError(401, "unknown or revoked token", slug="unauthenticated", headers=challenge)
    return token


CurrentToken = Annotated[ApiToken, Depends(get_token)]
