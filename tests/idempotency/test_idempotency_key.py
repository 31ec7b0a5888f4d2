"""Idempotency-Key on POST /v1/evaluations: the rows of the failure table (docs/caching.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from service.config import Settings
from service.database import utcnow
from service.idempotency.models import IdempotencyKey
from service.main import create_app
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    KeyMaker,
    analysis,
    completion,
    interview,
    serving,
    settle,
)
from tests.conftest import scores_content as content
from tests.evaluations.test_create import stored_count

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
GOOD = content({"technical_depth": 4, "communication": 3})


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


@pytest.fixture
def llm(upstream: respx.MockRouter) -> respx.Route:
    upstream.post(ANALYZE).mock(return_value=analysis())
    return upstream.post(CHAT).mock(return_value=completion(GOOD))


async def key_rows(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)


async def test_a_retry_gets_the_first_response_again(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    first = await client.post("/v1/evaluations", json=interview(), headers=keyed(auth, "k-1"))
    # Key order and whitespace do not make another request.
    retry = await client.post(
        "/v1/evaluations",
        content=httpx.Request("POST", "/", json=dict(reversed(interview().items()))).content,
        headers={**keyed(auth, "k-1"), "Content-Type": "application/json"},
    )

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["location"] == first.headers["location"]
    assert llm.call_count == 1
    assert await stored_count(app) == 1


async def test_a_retry_of_an_accepted_request_is_accepted_again(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    headers = {**keyed(auth, "k-async"), "Prefer": "respond-async"}

    first = await client.post("/v1/evaluations", json=interview(), headers=headers)
    retry = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    # The replay still tells the client how to poll, as the first answer did.
    for name in ("location", "retry-after", "preference-applied"):
        assert retry.headers[name] == first.headers[name], name
    assert await stored_count(app) == 1


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    await client.post("/v1/evaluations", json=interview(), headers=keyed(auth, "k-2"))

    other = await client.post(
        "/v1/evaluations", json=interview(language="ko"), headers=keyed(auth, "k-2")
    )

    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert llm.call_count == 1
    assert await stored_count(app) == 1


async def test_the_same_key_while_the_first_runs_is_a_conflict(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def held_llm(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return completion(GOOD)

    upstream.post(CHAT).mock(side_effect=held_llm)
    upstream.post(ANALYZE).mock(return_value=analysis())
    headers = keyed(auth, "k-3")
    first = asyncio.create_task(client.post("/v1/evaluations", json=interview(), headers=headers))
    await asyncio.wait_for(started.wait(), 10)  # the key is claimed before the LLM is called

    second = await client.post("/v1/evaluations", json=interview(), headers=headers)
    release.set()

    assert second.status_code == 409
    assert second.json()["type"].endswith("/idempotency-key-in-use")
    assert second.headers["retry-after"] == "1"
    assert (await first).status_code == 201
    assert await stored_count(app) == 1


async def test_fifty_concurrent_retries_make_one_evaluation(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    headers = keyed(auth, "k-50")
    retries: list[asyncio.Task[httpx.Response]] = []

    async def held_llm(request: httpx.Request) -> httpx.Response:
        # The first request's call is held until the 49 others have been answered: they all
        # arrive while it runs (a condition, bounded by the LLM timeout, not a sleep).
        while sum(retry.done() for retry in retries) < 49:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return completion(GOOD)

    llm = upstream.post(CHAT).mock(side_effect=held_llm)
    upstream.post(ANALYZE).mock(return_value=analysis())

    retries += [
        asyncio.create_task(client.post("/v1/evaluations", json=interview(), headers=headers))
        for _ in range(50)
    ]
    responses = await asyncio.gather(*retries)
    later = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert sorted(r.status_code for r in responses) == [201] + [409] * 49
    assert llm.call_count == 1
    assert await stored_count(app) == 1
    assert later.status_code == 201
    assert later.headers["idempotent-replayed"] == "true"
    first = next(r for r in responses if r.status_code == 201)
    assert later.json() == first.json()


async def test_keys_belong_to_one_api_key(
    client: httpx.AsyncClient, make_key: KeyMaker, llm: respx.Route, app: FastAPI
) -> None:
    one, two = await make_key(), await make_key()

    first = await client.post("/v1/evaluations", json=interview(), headers=keyed(one, "k-4"))
    second = await client.post("/v1/evaluations", json=interview(), headers=keyed(two, "k-4"))

    assert first.status_code == second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in second.headers
    assert await stored_count(app) == 2


async def test_an_expired_key_can_be_used_again(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    first = await client.post("/v1/evaluations", json=interview(), headers=keyed(auth, "k-5"))
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1))
        )

    again = await client.post(
        "/v1/evaluations", json=interview(language="ko"), headers=keyed(auth, "k-5")
    )

    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert await key_rows(app) == 1


async def test_a_key_left_in_progress_by_a_crashed_request_is_taken_over(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    await client.post("/v1/evaluations", json=interview(), headers=keyed(auth, "k-6"))
    long_ago = utcnow() - timedelta(hours=1)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(IdempotencyKey).values(
                status="in_progress", response_body=None, created_at=long_ago
            )
        )

    again = await client.post("/v1/evaluations", json=interview(), headers=keyed(auth, "k-6"))

    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers


async def test_a_failed_request_releases_its_key(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(ANALYZE).mock(return_value=analysis())
    upstream.post(CHAT).mock(
        side_effect=[httpx.Response(400, json={"error": {"message": "no"}}), completion(GOOD)]
    )
    headers = keyed(auth, "k-7")

    failed = await client.post("/v1/evaluations", json=interview(), headers=headers)
    retried = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert failed.status_code == 502
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert await stored_count(app) == 1


async def test_a_deleted_evaluation_is_not_replayed(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    headers = keyed(auth, "k-8")
    first = (await client.post("/v1/evaluations", json=interview(), headers=headers)).json()

    await client.delete(f"/v1/evaluations/{first['id']}", headers=auth)
    again = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first["id"]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"], ids=["empty", "long", "non-ascii"])
async def test_a_malformed_key_is_rejected(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, key: str
) -> None:
    headers: dict[str, Any] = {**auth, "Idempotency-Key": key.encode()}

    response = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert llm.call_count == 0


async def test_a_retry_on_another_replica_is_a_replay(
    settings: Settings, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    replica = create_app(settings)
    headers = keyed(auth, "k-9")
    async with (
        serving(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as one,
        httpx.AsyncClient(transport=httpx.ASGITransport(replica), base_url="http://b") as two,
    ):
        first = await one.post("/v1/evaluations", json=interview(), headers=headers)
        retry = await two.post("/v1/evaluations", json=interview(), headers=headers)

    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert await stored_count(app) == 1


@pytest.mark.parametrize("prefer", [{}, {"Prefer": "respond-async"}], ids=["sync", "async"])
async def test_erasing_an_evaluation_erases_its_idempotency_record(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    llm: respx.Route,
    app: FastAPI,
    prefer: dict[str, str],
) -> None:
    """The record keeps the first response, which names the candidate and their email: an
    erasure leaves none of it, and a retry under the key is a new request."""
    headers = {**keyed(auth, "k-erase"), **prefer}
    first = await client.post("/v1/evaluations", json=interview(), headers=headers)
    await settle(app)
    async with app.state.sessionmaker() as session:
        [record] = (await session.scalars(select(IdempotencyKey))).all()
    assert "jane@example.com" in (record.response_text or "")

    erased = await client.delete(f"/v1/evaluations/{first.json()['id']}", headers=auth)

    assert erased.status_code == 204
    assert await key_rows(app) == 0
    again = await client.post("/v1/evaluations", json=interview(), headers=headers)
    assert again.status_code == first.status_code
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    await settle(app)
    assert llm.call_count == 2
