"""POST /v1/evaluations with Prefer: respond-async: 202, background scoring, restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import update

from service.auth.service import create_api_key
from service.config import Settings
from service.database import utcnow
from service.evaluations.models import Evaluation
from service.jobs import repository
from service.main import create_app
from tests.conftest import completion, scores_content, serving
from tests.jobs.helpers import ASYNC, CHAT, evaluations, eventually, item_of, numbered

GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))


async def test_answers_202_at_once_then_the_evaluation_completes(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    release = asyncio.Event()

    async def llm(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return GOOD

    upstream.post(CHAT).mock(side_effect=llm)

    response = await client.post("/v1/evaluations", json=numbered(1), headers=auth | ASYNC)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert body["overall_score"] is None
    assert response.headers["location"] == f"/v1/evaluations/{body['id']}"
    assert response.headers["preference-applied"] == "respond-async"
    # When to poll: on the 202 and on every read while it is pending.
    assert response.headers["retry-after"] == "1"
    polled = await client.get(response.headers["location"], headers=auth)
    assert polled.json()["status"] == "pending"
    assert polled.headers["retry-after"] == "1"

    release.set()

    async def completed() -> bool:
        polled = await client.get(response.headers["location"], headers=auth)
        return bool(polled.json()["status"] == "completed")

    await eventually(completed)
    read = await client.get(response.headers["location"], headers=auth)
    assert "retry-after" not in read.headers
    final = read.json()
    assert final["overall_score"] == pytest.approx(66.7)
    assert final["recommendation"] == "hire"
    assert final["completed_at"] is not None
    assert final["error"] is None


async def test_an_upstream_failure_leaves_it_failed_with_the_problem(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=httpx.Response(400, json={"error": {}}))

    response = await client.post("/v1/evaluations", json=numbered(1), headers=auth | ASYNC)
    assert response.status_code == 202

    async def failed() -> bool:
        polled = await client.get(response.headers["location"], headers=auth)
        return bool(polled.json()["status"] == "failed")

    await eventually(failed)
    final = (await client.get(response.headers["location"], headers=auth)).json()
    assert final["error"]["status"] == 502
    assert final["error"]["type"].endswith("/llm-rejected")
    assert final["error"]["instance"] == response.headers["location"]
    assert final["overall_score"] is None


async def test_an_invalid_request_is_still_refused_at_once(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    body = numbered(1)
    body["transcript"] = []

    response = await client.post("/v1/evaluations", json=body, headers=auth | ASYNC)

    assert response.status_code == 422
    assert await evaluations(app) == []


async def test_without_the_preference_the_answer_is_synchronous(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)

    response = await client.post(
        "/v1/evaluations", json=numbered(1), headers=auth | {"Prefer": "return=minimal"}
    )

    assert response.status_code == 201
    assert response.json()["status"] == "completed"
    assert "preference-applied" not in response.headers


async def test_a_callback_needs_the_async_preference(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = numbered(1, callback_url="https://hooks.example.com/scorer")

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 422
    assert "respond-async" in response.json()["detail"]


def _app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"job_concurrency": 2})


async def test_pending_work_survives_a_restart_and_is_scored_once(
    settings: Settings, upstream: respx.MockRouter
) -> None:
    """The first process stops with two scorings in flight and more waiting; the second
    finishes them all, each evaluation completed once."""
    settings = _app_settings(settings)
    calls: Counter[int] = Counter()
    first_process = True
    in_flight = 0
    two_in_flight = asyncio.Event()

    async def llm(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        calls[item_of(request)] += 1
        if first_process:
            in_flight += 1
            if in_flight == 2:
                two_in_flight.set()
            await asyncio.Event().wait()  # never answers: the process stops first
        return GOOD

    upstream.post(CHAT).mock(side_effect=llm)

    first = create_app(settings)
    async with serving(first):
        async with first.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="test")
        auth = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            for i in range(6):
                response = await c.post("/v1/evaluations", json=numbered(i), headers=auth | ASYNC)
                assert response.status_code == 202
        await two_in_flight.wait()
    assert {e.status for e in await evaluations(first)} == {"pending"}
    assert sum(calls.values()) == 2

    first_process = False
    second = create_app(settings)
    async with serving(second):

        async def all_done() -> bool:
            return all(e.status == "completed" for e in await evaluations(second))

        await eventually(all_done)
        rows = await evaluations(second)

    assert len(rows) == 6
    assert sorted(int(r.candidate_name.split()[1]) for r in rows) == list(range(6))
    assert all(r.claimed_by is None for r in rows)
    # Every item scored; only the two interrupted in flight were asked twice.
    assert sorted(calls) == list(range(6))
    assert sorted(calls.values()) == [1, 1, 1, 1, 2, 2]


async def test_a_live_lease_is_left_alone_and_an_expired_one_taken_over(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI, upstream: respx.MockRouter
) -> None:
    """Another replica's evaluation is not scored while its lease lasts; once it lapses
    (that replica died), this one scores it."""
    upstream.post(CHAT).mock(return_value=GOOD)
    runner = app.state.job_runner
    await runner.stop()
    response = await client.post("/v1/evaluations", json=numbered(1), headers=auth | ASYNC)
    evaluation_id = response.json()["id"]
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id)
            .values(claimed_by="other-replica", claimed_until=utcnow() + timedelta(minutes=5))
        )
    # A claim, the one a runner makes each round, leaves it alone: asked, not waited for.
    async with app.state.sessionmaker() as session, session.begin():
        claimed = await repository.claim(
            session, worker_id="this-replica", lease_s=60, limit=10, max_attempts=5
        )
    assert list(claimed) == []
    assert [e.status for e in await evaluations(app)] == ["pending"]
    assert not upstream.calls

    runner.start()

    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id)
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    runner.wake()

    async def completed() -> bool:
        return [e.status for e in await evaluations(app)] == ["completed"]

    await eventually(completed)


async def test_an_idempotent_retry_replays_the_202_and_scores_once(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    llm = upstream.post(CHAT).mock(return_value=GOOD)
    headers = auth | ASYNC | {"Idempotency-Key": "retry-1"}

    first = await client.post("/v1/evaluations", json=numbered(1), headers=headers)
    again = await client.post("/v1/evaluations", json=numbered(1), headers=headers)

    assert first.status_code == 202
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]

    async def completed() -> bool:
        return [e.status for e in await evaluations(app)] == ["completed"]

    await eventually(completed)
    assert llm.call_count == 1
