"""Error responses as documented in OpenAPI (their bodies are ``Problem``; see problems.problem_openapi)."""

from __future__ import annotations

from typing import Any

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No token, or an unknown or revoked one."}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such job visible to this token."}}
INVALID: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid request; `errors` names each field."}}
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {"description": "Request body over the service's limit."}}
JOB_READ = {**UNAUTHORIZED, **NOT_FOUND, **INVALID}
