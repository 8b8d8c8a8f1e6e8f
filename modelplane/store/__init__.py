"""Persistence: SQLAlchemy 2 (async) models, Alembic migrations, repositories.

ORM classes never leave this package; repositories return plain dataclasses.
"""
