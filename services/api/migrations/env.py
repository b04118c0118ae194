"""Alembic environment: runs on the connection the app hands over, or on the configured URL.

From the repository root, ``alembic upgrade head`` (config in pyproject.toml) migrates the database
named by ``SOLRL_DATABASE_URL``; the service runs the same upgrade programmatically at start.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from services.api.tables import Base

target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
    # render_as_batch: SQLite can only ALTER tables by copying them; batch mode does that for us.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from services.api.settings import ApiSettings

    engine = create_engine(ApiSettings().database_url)  # SOLRL_DATABASE_URL, else SQLite under SOLRL_HOME
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run them against a database")
run_migrations_online()
