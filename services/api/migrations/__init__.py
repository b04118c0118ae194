"""Alembic migrations of the job service database (a package so wheels ship them)."""
