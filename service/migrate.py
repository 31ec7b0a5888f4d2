"""Alembic, driven from the service: upgrade, and whether the database is current.

Whether the database is current is asked at start-up and by every /readyz, in the API
process; that question is answered here without importing Alembic (11 MB of every API
process's memory): the newest revision is read from the migration files' own `revision` and
`down_revision` lines (tests/test_migrations.py checks it against Alembic's answer), and the
database's from the `alembic_version` table Alembic keeps.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

_PACKAGE = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """The migrations: packaged into the wheel, or the repository's own folder."""
    packaged = _PACKAGE / "_migrations"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for `database_url`, independent of the working directory."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply the migrations up to `revision` (blocking; not for the event loop)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert the migrations down to `revision` (blocking; not for the event loop)."""
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN_REVISION = re.compile(r"^down_revision(?::[^=]*)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.M)


@functools.cache
def head_revision() -> str | None:
    """The newest migration: the one revision no other migration names as its predecessor."""
    revisions: set[str] = set()
    predecessors: set[str] = set()
    for path in (migrations_dir() / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        down = _DOWN_REVISION.search(source)
        if down is not None and down.group(1):
            predecessors.add(down.group(1))
    heads = revisions - predecessors
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {sorted(heads)}")
    return heads.pop() if heads else None


async def database_revision(connection: AsyncConnection) -> str | None:
    """The revision the database is at, None when it was never migrated."""
    try:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:
        # No version table: never migrated. (PostgreSQL's failed statement must be undone.)
        await connection.rollback()
        return None
    return str(version) if version is not None else None


async def current_revision(database_url: str) -> str | None:
    """The revision the database at `database_url` is at, None when it was never migrated."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await database_revision(connection)
    finally:
        await engine.dispose()
