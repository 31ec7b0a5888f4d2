"""The group writer: requests' rows committed together, each write failing alone, durable
before `write` returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth.models import ApiKey
from service.config import Settings
from service.database import create_engine, new_id, utcnow
from service.writer import GroupWriter, Write

API_KEY = cast(Table, ApiKey.__table__)


def _key(name: str, *, key_hash: str | None = None) -> dict[str, object]:
    return {
        "id": new_id(),
        "name": name,
        "prefix": "isk_test",
        "key_hash": key_hash or new_id(),
        "scopes": "read",
        "created_at": utcnow(),
        "revoked_at": None,
        "webhook_secret": None,
    }


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(
        Settings(_env_file=None, database_url=database_url, llm_provider="simulated")
    )
    yield engine
    await engine.dispose()


async def _names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.scalars(select(ApiKey.name)))


async def test_writes_arriving_together_are_committed_in_fewer_transactions(
    engine: AsyncEngine,
) -> None:
    writer = GroupWriter(engine, max_delay_s=0.05, max_rows=300)
    writer.start()
    try:
        await asyncio.gather(
            *(writer.write(Write().insert(API_KEY, [_key(f"k{n}")])) for n in range(100))
        )
        # Durable when write() returned: another connection sees every row.
        assert await _names(engine) == {f"k{n}" for n in range(100)}
        assert 1 <= writer.commits < 100
    finally:
        await writer.stop()


async def test_a_group_closes_at_its_row_limit(engine: AsyncEngine) -> None:
    writer = GroupWriter(engine, max_delay_s=1.0, max_rows=10)
    writer.start()
    try:
        await asyncio.gather(
            *(writer.write(Write().insert(API_KEY, [_key(f"k{n}")])) for n in range(50))
        )
        assert writer.commits >= 5
    finally:
        await writer.stop()


async def test_a_write_that_breaks_a_constraint_fails_alone(engine: AsyncEngine) -> None:
    writer = GroupWriter(engine, max_delay_s=0.05)
    writer.start()
    try:
        good = [Write().insert(API_KEY, [_key(f"good{n}")]) for n in range(20)]
        clash = Write().insert(API_KEY, [_key("first", key_hash="same")])
        duplicate = Write().insert(API_KEY, [_key("second", key_hash="same")])
        outcomes = await asyncio.gather(
            *(writer.write(w) for w in [*good[:10], clash, duplicate, *good[10:]]),
            return_exceptions=True,
        )
    finally:
        await writer.stop()

    assert [type(o) for o in outcomes].count(IntegrityError) == 1
    assert isinstance(outcomes[11], IntegrityError)
    assert all(o is None for i, o in enumerate(outcomes) if i != 11)
    assert await _names(engine) == {f"good{n}" for n in range(20)} | {"first"}


async def test_stop_commits_what_is_queued(engine: AsyncEngine) -> None:
    writer = GroupWriter(engine, max_delay_s=0.2)
    writer.start()
    pending = [
        asyncio.create_task(writer.write(Write().insert(API_KEY, [_key(f"k{n}")])))
        for n in range(5)
    ]
    await asyncio.sleep(0)  # queued, the group still open

    await writer.stop()

    await asyncio.gather(*pending)
    assert await _names(engine) == {f"k{n}" for n in range(5)}


async def test_a_writer_not_started_commits_each_write_itself(engine: AsyncEngine) -> None:
    writer = GroupWriter(engine)
    try:
        await writer.write(Write().insert(API_KEY, [_key("alone")]))
        assert await _names(engine) == {"alone"}
        async with engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(API_KEY)) == 1
    finally:
        await writer.stop()
