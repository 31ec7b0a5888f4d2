"""Redis stopped mid-test: the service keeps scoring, says so in /readyz, and recovers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import respx

from service.cache import backend as cache_backend
from service.config import Settings
from tests.cache.redis_server import RedisServer
from tests.conftest import ANALYZER_URL, LLM_BASE_URL, analysis, completion, interview
from tests.conftest import scores_content as content

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"


@pytest.fixture
def settings_overrides(redis: RedisServer) -> dict[str, Any]:
    """Redis only, with a short timeout: a paused server makes every call wait for it."""
    return {"redis_url": redis.url, "redis_timeout_s": 0.2}


async def test_scoring_continues_without_redis_and_caching_resumes_when_it_returns(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = upstream.post(CHAT).mock(
        return_value=completion(content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(ANALYZE).mock(return_value=analysis())

    async def post() -> httpx.Response:
        return await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert (await post()).json()["cached"] is False
    assert (await post()).json()["cached"] is True
    assert (await client.get("/readyz")).json()["checks"]["cache"] == "ok"

    caplog.set_level(logging.INFO, logger="service.cache")
    await asyncio.to_thread(redis.stop)
    during = [await post() for _ in range(3)]
    read = await client.get(f"/v1/evaluations/{during[0].json()['id']}", headers=auth)
    listed = await client.get("/v1/evaluations", headers=auth)
    ready = await client.get("/readyz")

    assert [r.status_code for r in during] == [201] * 3
    assert [r.json()["cached"] for r in during] == [False] * 3
    assert llm.call_count == 4
    assert read.status_code == 200
    assert len(listed.json()["items"]) == 5
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "cache": "down"}
    assert ready.json()["status"] == "degraded"
    outage_logs = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(outage_logs) == 1

    await asyncio.to_thread(redis.start)

    assert (await client.get("/readyz")).json()["checks"]["cache"] == "ok"
    assert (await post()).json()["cached"] is False  # the restarted Redis is empty
    assert (await post()).json()["cached"] is True
    assert llm.call_count == 5
    assert any("cache available again" in r.getMessage() for r in caplog.records)


async def test_a_delete_during_an_outage_cannot_resurrect_a_cached_read(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every call probes Redis, so the first call after the outage is the one that recovers.
    monkeypatch.setattr(cache_backend, "RETRY_AFTER_S", 0.0)
    llm = upstream.post(CHAT).mock(
        return_value=completion(content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(ANALYZE).mock(return_value=analysis())
    # No mail: a read is cached at once (its view is final).
    body = interview(notify=None)
    created = (await client.post("/v1/evaluations", json=body, headers=auth)).json()
    url = f"/v1/evaluations/{created['id']}"
    await client.get(url, headers=auth)
    assert (await client.get(url, headers=auth)).headers["x-fastapi-cache"] == "HIT"
    # Paused rather than stopped: Redis comes back with its data, the stale entries included.
    await asyncio.to_thread(redis.pause)

    assert (await client.delete(url, headers=auth)).status_code == 204

    await asyncio.to_thread(redis.resume)
    assert (await client.get(url, headers=auth)).status_code == 404
    again = await client.post("/v1/evaluations", json=body, headers=auth)
    assert again.json()["cached"] is False
    assert llm.call_count == 2


async def test_more_calls_at_once_than_connections_wait_their_turn_not_an_outage(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the chaos run: at 200 requests in flight redis-py's pool raised
    # MaxConnectionsError, which the cache took for an outage.
    backend = cache_backend.build_backend(
        Settings(_env_file=None, redis_url=redis.url, llm_provider="simulated")
    )
    calls = 3 * cache_backend.REDIS_MAX_CONNECTIONS
    try:
        await asyncio.gather(*(backend.set(f"k{i}", b"v", 60) for i in range(calls)))
        got = await asyncio.gather(*(backend.get(f"k{i}") for i in range(calls)))
    finally:
        await backend.close()

    assert got == [b"v"] * calls
    assert not backend.is_down
    assert "cache unavailable" not in caplog.text
