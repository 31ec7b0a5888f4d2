"""The schema comes only from the migrations: they upgrade, downgrade and upgrade again, and
match the models (alembic check), on this run's backend (SQLite, or PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.database import UTCDateTime
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


_NOW = datetime(2026, 12, 1, tzinfo=UTC)
_api_key = sa.table(
    "api_key", *(sa.column(c) for c in ("id", "name", "prefix", "key_hash", "scopes")),
    sa.column("created_at", UTCDateTime()),
)  # fmt: skip
_evaluation = sa.table(
    "evaluation",
    *(sa.column(c) for c in ("id", "status", "candidate_name", "candidate_email")),
    *(sa.column(c) for c in ("position_title", "partial", "needs_review", "cached")),
    sa.column("request", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
)
_OUTBOX_COLUMNS = (
    "id", "channel", "kind", "evaluation_id", "recipient", "subject", "text_body",
    "message_id", "status", "attempts",
)  # fmt: skip
_outbox = sa.table(
    "outbox_message",
    *(sa.column(c) for c in (*_OUTBOX_COLUMNS, "url", "signing_key_id", "payload")),
    sa.column("created_at", UTCDateTime()),
)


def _run(url: str, statements: Callable[[Connection], Any]) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(statements)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_0007_moves_webhook_deliveries_into_their_own_columns_and_back(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    upgrade(url, "0006")
    event = json.dumps({"type": "evaluation.completed", "data": {"id": "ev-1"}})

    def seed(connection: Connection) -> None:
        connection.execute(
            _api_key.insert().values(
                id="key-1", name="k", prefix="isk_x", key_hash="h", scopes="read",
                created_at=_NOW,
            )
        )  # fmt: skip
        connection.execute(
            _evaluation.insert().values(
                id="ev-1", status="completed", candidate_name="Jane", candidate_email="j@x.io",
                position_title="T", partial=False, needs_review=False, cached=False,
                request={}, created_at=_NOW,
            )
        )  # fmt: skip
        base = {"status": "queued", "attempts": 0, "created_at": _NOW}
        connection.execute(
            _outbox.insert().values(
                id="hook", channel="webhook", kind="evaluation.completed", evaluation_id=None,
                recipient="https://hooks.example/in", subject="key-1", text_body=event,
                message_id="m-hook", **base,
            )
        )  # fmt: skip
        connection.execute(
            _outbox.insert().values(
                id="mail", channel="email", kind="candidate_follow_up", evaluation_id="ev-1",
                recipient="j@x.io", subject=None, text_body=None, message_id="m-mail", **base,
            )
        )  # fmt: skip

    def outbox(connection: Connection) -> dict[str, dict[str, Any]]:
        columns = [c for c in _OUTBOX_COLUMNS if c not in ("kind", "message_id", "status")]
        present = {c["name"] for c in inspect(connection).get_columns("outbox_message")}
        columns += [c for c in ("url", "signing_key_id", "payload") if c in present]
        rows = connection.execute(sa.select(*(_outbox.c[c] for c in columns))).mappings()
        return {row["id"]: dict(row) for row in rows}

    def tenants(connection: Connection) -> set[str]:
        return set(connection.scalars(sa.text("SELECT tenant FROM evaluation")))

    _run(url, seed)
    upgrade(url, "0007")
    rows = _run(url, outbox)
    assert _run(url, tenants) == {"default"}

    assert rows["hook"] == {
        "id": "hook", "channel": "webhook", "evaluation_id": "ev-1", "recipient": None,
        "subject": None, "text_body": None, "attempts": 0, "url": "https://hooks.example/in",
        "signing_key_id": "key-1", "payload": event,
    }  # fmt: skip
    assert (rows["mail"]["recipient"], rows["mail"]["url"]) == ("j@x.io", None)

    downgrade(url, "0006")
    rows = _run(url, outbox)

    assert rows["hook"] == {
        "id": "hook", "channel": "webhook", "evaluation_id": None,
        "recipient": "https://hooks.example/in", "subject": "key-1", "text_body": event,
        "attempts": 0,
    }  # fmt: skip
    assert rows["mail"]["recipient"] == "j@x.io"
