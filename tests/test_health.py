"""/healthz and /readyz: liveness, and readiness naming what is down."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.config import Settings
from service.main import create_app
from service.migrate import downgrade
from tests.cache.redis_server import RedisServer, find_redis
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
    server_unavailable,
)
from tests.databases import postgres_mode
from tests.servers import free_port


async def test_healthz_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


IDLE = {"messages": 0, "evaluations": 0, "oldest_unclaimed_age_s": 0.0}
# Structured output under the schema: no server has refused it (tests/llm/test_json_mode.py).
UNDER_SCHEMA = {"response_format": "json_schema", "fallback_reason": None}


async def test_ready_when_database_is_current(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "cache": "ok"},
        "worker": IDLE,
        "llm": UNDER_SCHEMA,
    }


async def test_readiness_shows_the_workers_backlog(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI, upstream: respx.MockRouter
) -> None:
    """Work the API queued and no worker took: counted, and its wait reported, still ready."""
    upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    await app.state.worker.stop()
    notify = {"candidate": True, "recruiters": ["lead@example.com"]}
    assert (
        await client.post("/v1/evaluations", json=interview(notify=notify), headers=auth)
    ).status_code == 201
    queued = await client.post(
        "/v1/evaluations", json=interview(), headers={**auth, "Prefer": "respond-async"}
    )
    assert queued.status_code == 202
    await asyncio.sleep(0.05)

    response = await client.get("/readyz")

    assert response.status_code == 200
    backlog = response.json()["worker"]
    assert (backlog["messages"], backlog["evaluations"]) == (2, 1)
    assert backlog["oldest_unclaimed_age_s"] >= 0.05


async def test_not_ready_when_migrations_are_behind(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await asyncio.to_thread(downgrade, database_url, "base")

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"] == {"database": "ok", "migrations": "down", "cache": "ok"}
    assert body["detail"] == "down: migrations"


async def _aiosqlite_threads_done() -> None:
    # aiosqlite stops a connection that failed to open without awaiting the stop: its thread
    # answers later, and would find this test's event loop closed.
    for _ in range(1000):
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            return
        await asyncio.sleep(0.01)


def _unreachable_database(tmp_path: Path) -> str:
    if postgres_mode():
        return f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    return f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}"


async def test_not_ready_when_database_is_unreachable(settings: Settings, tmp_path: Path) -> None:
    broken = settings.model_copy(update={"database_url": _unreachable_database(tmp_path)})
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            response = await c.get("/readyz")
            alive = await c.get("/healthz")
    await _aiosqlite_threads_done()

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "down", "migrations": "down", "cache": "ok"}
    assert response.json()["detail"] == "down: database, migrations"
    assert alive.status_code == 200


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    binary = find_redis()
    if binary is None:
        server_unavailable("redis-server is not installed")
    assert binary is not None
    server = RedisServer(binary)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _ready(settings: Settings, **changes: Any) -> httpx.Response:
    app: FastAPI = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            return await c.get("/readyz")


async def test_ready_checks_the_configured_cache(settings: Settings, redis_url: str) -> None:
    response = await _ready(settings, redis_url=redis_url)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "cache": "ok"},
        "worker": IDLE,
        "llm": UNDER_SCHEMA,
    }


async def test_a_cache_outage_is_reported_and_the_replica_stays_ready(settings: Settings) -> None:
    # Without Redis the service scores uncached: a 503 from every replica would turn a cache
    # outage into a full one.
    response = await _ready(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "migrations": "ok", "cache": "down"},
        "worker": IDLE,
        "llm": UNDER_SCHEMA,
    }
