"""The Alembic migrations create exactly the tables of ``services.api.tables`` (and run twice safely)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("alembic", reason="the job service needs the api extra")

from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402

from services.api.db import make_engine, migrate  # noqa: E402
from services.api.tables import Base  # noqa: E402


def test_migrations_match_the_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    migrate(engine)  # every start runs it: must be a no-op the second time
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
