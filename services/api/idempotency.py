"""``Idempotency-Key`` for POST /v1/jobs (draft-ietf-httpapi-idempotency-key-header semantics).

Same key and same body: the stored response is replayed. Same key, another body: 422. Same key
while the first request is still being handled: 409. The key is claimed in its own commit before
any work, so a concurrent request sees the claim; a rejected request releases it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.api.problems import ApiError
from services.api.tables import IdempotencyRecord, utcnow

# A claim older than this with no response is from a request that died mid-way: it may be re-claimed.
STALE_CLAIM = timedelta(minutes=2)


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Claim:
    record: IdempotencyRecord | None = None  # ours to complete
    replay: tuple[int, dict[str, Any]] | None = None  # (status, body) of the first response


def claim(session: Session, owner_id: str, key: str, digest: str) -> Claim:
    record = IdempotencyRecord(owner_id=owner_id, key=key, request_hash=digest)
    session.add(record)
    try:
        session.commit()
        return Claim(record=record)
    except IntegrityError:
        session.rollback()
    existing = session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.owner_id == owner_id,
                                                              IdempotencyRecord.key == key))
    if existing is None:  # released between our insert and this read: treat as in flight, the client retries
        raise ApiError(409, "a request with this Idempotency-Key is in flight; retry later",
                       slug="idempotency-in-flight")
    if existing.request_hash != digest:
        raise ApiError(422, "this Idempotency-Key was used with a different request body; use a new key",
                       slug="idempotency-key-reused", errors=[("Idempotency-Key", "reused with another body")])
    if existing.response_status is not None and existing.response_body is not None:
        return Claim(replay=(existing.response_status, existing.response_body))
    if utcnow() - existing.created_at < STALE_CLAIM:
        raise ApiError(409, "a request with this Idempotency-Key is in flight; retry later",
                       slug="idempotency-in-flight")
    existing.created_at = utcnow()  # take over the abandoned claim
    session.commit()
    return Claim(record=existing)


def complete(record: IdempotencyRecord, status: int, body: dict[str, Any]) -> None:
    """Store the response on the claim; committed by the caller with the job it describes."""
    record.response_status = status
    record.response_body = body


def release(session: Session, record: IdempotencyRecord) -> None:
    session.rollback()
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record.id))
    session.commit()
