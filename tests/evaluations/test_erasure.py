"""Erasure is complete: pending webhooks are cancelled, and every process's cached copies go,
within SCORER_ERASURE_POLL_S, even when Redis was down at the moment of erasure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select

from service.config import Settings
from service.evaluations.erasures import ErasureWatcher
from service.evaluations.models import Erasure
from service.main import create_app
from service.notifications.outbox import OutboxMessage
from service.webhooks.delivery import WebhookDeliverer
from tests.cache.redis_server import RedisServer
from tests.conftest import ANALYZER_URL, Receiver, analysis, interview, serving
from tests.jobs.helpers import ASYNC, CHAT, eventually, numbered
from tests.jobs.test_webhooks import FAST_RETRIES, GOOD

# The receiver's first answer fails; the retry is an hour away when the evaluation is erased.
LATE_RETRY = FAST_RETRIES | {"webhook_backoff_base_s": 3600, "webhook_backoff_cap_s": 7200}


@pytest.mark.parametrize("settings_overrides", [LATE_RETRY])
async def test_delete_cancels_a_pending_webhook_and_erases_it(
    upstream: respx.MockRouter,
    receiver: Receiver,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    receiver.failures = [503]
    created = await client.post(
        "/v1/evaluations", json=numbered(1, callback_url=receiver.url), headers=auth | ASYNC
    )

    async def webhooks() -> list[OutboxMessage]:
        async with app.state.sessionmaker() as session:
            return list(
                await session.scalars(
                    select(OutboxMessage).where(OutboxMessage.channel == "webhook")
                )
            )

    async def waiting_for_retry() -> bool:
        rows = await webhooks()
        return bool(rows) and rows[0].status == "failed" and rows[0].next_attempt_at is not None

    await eventually(waiting_for_retry)
    assert (await webhooks())[0].evaluation_id == created.json()["id"]

    assert (await client.delete(created.headers["location"], headers=auth)).status_code == 204

    (row,) = await webhooks()
    assert (row.status, row.next_attempt_at, row.evaluation_id) == ("cancelled", None, None)
    assert (row.url, row.payload) == (None, None)
    deliverer: WebhookDeliverer = app.state.webhooks
    assert await deliverer.deliver_due() == 0
    assert len(receiver.deliveries) == 1


@pytest.fixture(params=["memory", "redis-down"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Replicas without Redis (each caches in process), or sharing a Redis that is down when
    the evaluation is erased."""
    values: dict[str, Any] = {}
    if request.param == "redis-down":
        values |= {"redis_url": request.getfixturevalue("redis").url, "redis_timeout_s": 0.2}
    return values


@pytest.fixture
def scoring(upstream: respx.MockRouter) -> respx.Route:
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    return upstream.post(CHAT).mock(return_value=GOOD)


@pytest.fixture
async def replica_app(settings: Settings, app: FastAPI) -> AsyncIterator[FastAPI]:
    """A second API process on the same database (and Redis, when there is one)."""
    async with serving(create_app(settings), worker=False) as other:
        yield other


@pytest.fixture
async def replica(replica_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=replica_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as c:
        yield c


async def erase_while_redis_is_down(
    client: httpx.AsyncClient, url: str, auth: dict[str, str], redis: RedisServer | None
) -> None:
    if redis is not None:
        # Paused, not stopped: Redis comes back with the stale entries in it.
        await asyncio.to_thread(redis.pause)
    try:
        assert (await client.delete(url, headers=auth)).status_code == 204
    finally:
        if redis is not None:
            await asyncio.to_thread(redis.resume)


def redis_of(request: pytest.FixtureRequest) -> RedisServer | None:
    if "redis-down" in request.node.callspec.id:
        server: RedisServer = request.getfixturevalue("redis")
        return server
    return None


async def test_an_erasure_reaches_another_replicas_cache_within_one_poll(
    request: pytest.FixtureRequest,
    scoring: respx.Route,
    client: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    replica_app: FastAPI,
    auth: dict[str, str],
) -> None:
    body = interview(notify=None)  # no mail: the view is final, so it is cached at once
    created = await client.post("/v1/evaluations", json=body, headers=auth)
    url = created.headers["location"]
    # The replica caches the read, and scores the same interview (its result cached too).
    for _ in range(2):
        assert (await replica.get(url, headers=auth)).status_code == 200
    assert (await replica.get(url, headers=auth)).headers["x-fastapi-cache"] == "HIT"
    assert (await replica.post("/v1/evaluations", json=body, headers=auth)).status_code == 201
    calls = scoring.call_count

    # The replica polls when the test says: one poll is the bound.
    erasures: ErasureWatcher = replica_app.state.erasures
    await erasures.stop()
    await erase_while_redis_is_down(client, url, auth, redis_of(request))
    assert await erasures.poll() == 1

    gone = await replica.get(url, headers=auth)
    again = await replica.post("/v1/evaluations", json=body, headers=auth)
    assert gone.status_code == 404
    assert again.json()["cached"] is False
    assert scoring.call_count == calls + 1
    assert (await client.get(url, headers=auth)).status_code == 404


@pytest.mark.parametrize("settings_overrides", [{"erasure_poll_s": 0.05}])
async def test_every_process_polls_on_its_own(
    scoring: respx.Route,
    client: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    auth: dict[str, str],
    app: FastAPI,
) -> None:
    created = await client.post("/v1/evaluations", json=interview(notify=None), headers=auth)
    url = created.headers["location"]
    for _ in range(2):
        await replica.get(url, headers=auth)

    assert (await client.delete(url, headers=auth)).status_code == 204

    async def forgotten() -> bool:
        return (await replica.get(url, headers=auth)).status_code == 404

    await eventually(forgotten)
    async with app.state.sessionmaker() as session:
        (erasure,) = await session.scalars(select(Erasure))
    assert erasure.evaluation_id == created.json()["id"]
    assert erasure.result_key is not None
