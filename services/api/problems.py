"""Errors as RFC 9457 problem documents: every 4xx/5xx the service sends is one of these.

Routes raise ``ApiError`` (or a subclass); FastAPI's own errors (unknown route, bad JSON, a query
parameter of the wrong type) are converted by the handlers registered in ``install_handlers``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:solrl:problem:"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field at fault, e.g. config.rollout.num_candidates.")
    message: str


class Problem(BaseModel):
    type: str = Field("about:blank", description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str = ""
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error response: status, a short title, a detail that says what to change."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, title: str | None = None,
                 errors: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = PROBLEM_BASE + slug if slug else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = headers

    def problem(self) -> Problem:
        errors = [FieldError(field=f, message=m) for f, m in self.errors] if self.errors is not None else None
        return Problem(type=self.type, title=self.title, status=self.status, detail=self.detail, errors=errors)


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", slug="not-found")


def _field_path(loc: tuple[Any, ...]) -> str:
    """('body', 'config', 'x') -> 'config.x'; ('query', 'limit') -> 'limit'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return problem_response(exc.problem(), exc.headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    problem = Problem(title=HTTPStatus(exc.status_code).phrase, status=exc.status_code, detail=detail)
    return problem_response(problem, getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = [FieldError(field=_field_path(tuple(e.get("loc", ()))), message=str(e.get("msg", "invalid")))
              for e in exc.errors()]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    problem = Problem(type=PROBLEM_BASE + "invalid-request", title="Invalid request", status=422,
                      detail=detail, errors=errors)
    return problem_response(problem)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(title="Internal Server Error", status=500,
                                    detail="the server failed to handle the request; see its log"))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Document every 4xx/5xx response as ``application/problem+json`` with the ``Problem`` schema.

    FastAPI documents its 422 as ``HTTPValidationError`` under application/json; the service never
    sends that shape, so the generated spec is corrected once here rather than per route.
    """
    ref = {"$ref": "#/components/schemas/Problem"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code[0] in "45":
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = components["Problem"].pop("$defs", {})
    components.update(defs)
    return schema
