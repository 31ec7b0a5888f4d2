"""The schema comes only from the migrations: they upgrade, downgrade and upgrade again, and
match the models (alembic check), on this run's backend (SQLite, or PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from service.models import Base


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:

                def names(sync: Connection) -> set[str]:
                    return set(inspect(sync).get_table_names())

                return await connection.run_sync(names)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    url = empty_database_url
    # Never migrated: no version table at all.
    assert asyncio.run(current_revision(url)) is None
    upgrade(url)
    assert asyncio.run(current_revision(url)) == head_revision()
    assert set(Base.metadata.tables) <= _tables(url)

    downgrade(url, "base")
    assert asyncio.run(current_revision(url)) is None
    assert _tables(url) <= {"alembic_version"}

    upgrade(url)
    assert asyncio.run(current_revision(url)) == head_revision()
    assert set(Base.metadata.tables) <= _tables(url)


def test_each_migration_steps_down_and_up(empty_database_url: str) -> None:
    url = empty_database_url
    script = ScriptDirectory.from_config(alembic_config(url))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    for revision in revisions:
        upgrade(url, revision)
        downgrade(url, "-1")
        upgrade(url, revision)
    assert asyncio.run(current_revision(url)) == head_revision()


def test_models_match_migrations(database_url: str) -> None:
    # alembic check: autogenerate finds nothing to add, so no model change lacks a migration.
    command.check(alembic_config(database_url))


def test_one_head_and_the_service_reads_it_as_alembic_does() -> None:
    # head_revision() reads the migration files without Alembic (kept out of the API process).
    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    assert heads == [head_revision()]
