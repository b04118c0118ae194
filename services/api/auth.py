"""Bearer tokens: a random secret shown once, stored as its sha256; created and revoked by the CLI."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.tables import ApiToken, utcnow

TOKEN_PREFIX = "solrl_"


class TokenError(ValueError):
    """A token operation cannot be done as asked (e.g. no token by that name)."""


def hash_token(secret: str) -> str:
    # The secret has 256 random bits, so a fast unsalted hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, *, admin: bool = False) -> tuple[ApiToken, str]:
    """A new token row and its secret (the only time the secret exists outside the client)."""
    if not name.strip():
        raise TokenError("a token needs a non-empty --name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(id=secrets.token_hex(8), name=name, token_hash=hash_token(secret), is_admin=admin)
    session.add(token)
    session.commit()
    return token, secret


def revoke_tokens(session: Session, *, name: str | None = None, token_id: str | None = None) -> list[ApiToken]:
    """Revoke the active token with ``token_id``, or every active token named ``name``."""
    if (name is None) == (token_id is None):
        raise TokenError("give exactly one of --name or --id")
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    query = query.where(ApiToken.name == name) if name is not None else query.where(ApiToken.id == token_id)
    tokens = list(session.scalars(query))
    if not tokens:
        raise TokenError(f"no active token with {'name' if name is not None else 'id'} "
                         f"{name if name is not None else token_id!r}")
    for token in tokens:
        token.revoked_at = utcnow()
    session.commit()
    return tokens


def list_tokens(session: Session) -> Sequence[ApiToken]:
    return session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all()


def authenticate(session: Session, secret: str) -> ApiToken | None:
    """The active token whose secret this is, or None."""
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None or token.revoked_at is not None:
        return None
    return token
