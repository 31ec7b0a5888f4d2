"""POST/GET /v1/evaluation-batches: per-item validation, progress, bounded concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select

from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.evaluations.models import Evaluation
from service.main import create_app
from tests.conftest import completion, scores_content, serving
from tests.jobs.helpers import CHAT, evaluations, eventually, item_of, numbered

GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))
BATCHES = "/v1/evaluation-batches"


async def finished(client: httpx.AsyncClient, auth: dict[str, str], location: str) -> Any:
    """The batch once it is completed."""
    body: Any = None

    async def done() -> bool:
        nonlocal body
        body = (await client.get(location, headers=auth)).json()
        return bool(body["status"] == "completed")

    # A generous bound: on a loaded machine 500 items take a while; not a timing test.
    await eventually(done, tries=6000, interval_s=0.1)
    return body


async def test_a_bad_item_is_reported_against_it_and_the_rest_complete(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    bad = numbered(1)
    bad["transcript"] = []
    items = [numbered(0), bad, numbered(2), {"not": "an interview"}]

    response = await client.post(BATCHES, json={"items": items}, headers=auth)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"{BATCHES}/{accepted['id']}"
    assert response.headers["retry-after"] == "1"
    assert accepted["total"] == 4
    assert accepted["counts"]["invalid"] == 2
    assert accepted["counts"]["pending"] + accepted["counts"]["completed"] == 2

    batch = await finished(client, auth, response.headers["location"])
    assert batch["counts"] == {"pending": 0, "completed": 2, "failed": 0, "invalid": 2}
    read = await client.get(response.headers["location"], headers=auth)
    assert "retry-after" not in read.headers
    assert batch["completed_at"] is not None
    assert [i["index"] for i in batch["items"]] == [0, 1, 2, 3]
    assert [i["status"] for i in batch["items"]] == ["completed", "invalid", "completed", "invalid"]
    invalid = batch["items"][1]
    assert invalid["evaluation_id"] is None
    assert invalid["error"]["status"] == 422
    assert invalid["error"]["errors"][0]["field"] == "transcript"
    assert invalid["error"]["instance"].endswith(f"/{accepted['id']}/items/1")
    first = batch["items"][0]
    assert first["href"] == f"/v1/evaluations/{first['evaluation_id']}"
    evaluation = (await client.get(first["href"], headers=auth)).json()
    assert evaluation["status"] == "completed"
    assert evaluation["candidate"]["name"] == "Candidate 0"
    assert len(await evaluations(app)) == 2


async def test_a_scoring_failure_fails_its_item_only(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    def llm(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {}}) if item_of(request) == 1 else GOOD

    upstream.post(CHAT).mock(side_effect=llm)

    response = await client.post(
        BATCHES, json={"items": [numbered(i) for i in range(3)]}, headers=auth
    )
    batch = await finished(client, auth, response.headers["location"])

    assert batch["counts"] == {"pending": 0, "completed": 2, "failed": 1, "invalid": 0}
    failed = (await client.get(batch["items"][1]["href"], headers=auth)).json()
    assert failed["status"] == "failed"
    assert failed["error"]["type"].endswith("/llm-rejected")


@pytest.mark.parametrize("settings_overrides", [{"max_batch_items": 3}])
async def test_more_items_than_the_setting_is_413_naming_the_field(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    response = await client.post(
        BATCHES, json={"items": [numbered(i) for i in range(4)]}, headers=auth
    )

    assert response.status_code == 413
    assert response.json()["detail"].startswith("items:")
    assert "SCORER_MAX_BATCH_ITEMS" in response.json()["detail"]
    assert await evaluations(app) == []


@pytest.mark.parametrize(
    "settings_overrides", [{"max_body_bytes": 4096, "max_batch_body_bytes": 100_000}]
)
async def test_the_batch_route_has_its_own_body_limit(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    items = [numbered(i) for i in range(20)]  # about 9 kB: over the general limit

    accepted = await client.post(BATCHES, json={"items": items}, headers=auth)
    too_big = await client.post(BATCHES, json={"items": items * 20}, headers=auth)
    single = await client.post("/v1/evaluations", json={"items": items}, headers=auth)

    assert accepted.status_code == 202
    assert too_big.status_code == 413
    assert "SCORER_MAX_BATCH_BODY_BYTES" in too_big.json()["detail"]
    assert single.status_code == 413
    assert "SCORER_MAX_BODY_BYTES" in single.json()["detail"]


async def test_an_empty_batch_or_an_unknown_one(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    empty = await client.post(BATCHES, json={"items": []}, headers=auth)
    unknown = await client.get(f"{BATCHES}/nope", headers=auth)
    no_key = await client.get(f"{BATCHES}/nope")

    assert empty.status_code == 422
    assert unknown.status_code == 404
    assert no_key.status_code == 401


class PeakMeter:
    """An LLM mock counting calls in flight; the first `cap` wait for each other, so the peak
    reaches the cap whatever the timing, and a missing bound shows as a higher one."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.in_flight = self.peak = 0
        self.full = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.cap:
            self.full.set()
        await self.full.wait()
        await asyncio.sleep(0.005)
        self.in_flight -= 1
        return GOOD


@pytest.mark.parametrize("settings_overrides", [{"job_concurrency": 3}])
async def test_concurrency_is_bounded_by_the_setting(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    cap = 3
    upstream.post(CHAT).mock(side_effect=(peak := PeakMeter(cap)))

    response = await client.post(
        BATCHES, json={"items": [numbered(i) for i in range(12)]}, headers=auth
    )
    batch = await finished(client, auth, response.headers["location"])

    assert batch["counts"]["completed"] == 12
    assert peak.peak == 3


@pytest.mark.parametrize("settings_overrides", [{"job_concurrency": 64, "llm_max_concurrency": 4}])
async def test_the_llm_cap_bounds_the_batch_too(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    cap = 4
    upstream.post(CHAT).mock(side_effect=(peak := PeakMeter(cap)))

    response = await client.post(
        BATCHES, json={"items": [numbered(i) for i in range(12)]}, headers=auth
    )
    await finished(client, auth, response.headers["location"])

    assert peak.peak == 4


async def test_500_interviews_in_one_batch_survive_a_restart_midway(
    settings: Settings, upstream: respx.MockRouter
) -> None:
    """The done criterion: 500 items, the process stops part-way, a new one finishes; every
    item ends completed with exactly one evaluation."""
    settings = settings.model_copy(update={"job_concurrency": 32})
    calls: Counter[int] = Counter()
    stop_after = 150
    answered = 0
    enough = asyncio.Event()
    first_process = True

    async def llm(request: httpx.Request) -> httpx.Response:
        nonlocal answered
        calls[item_of(request)] += 1
        if first_process and answered >= stop_after:
            enough.set()
            await asyncio.Event().wait()
        answered += 1
        return GOOD

    upstream.post(CHAT).mock(side_effect=llm)

    first = create_app(settings)
    async with serving(first):
        async with first.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="test")
        auth = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            response = await c.post(
                BATCHES, json={"items": [numbered(i) for i in range(500)]}, headers=auth
            )
            assert response.status_code == 202
            location = response.headers["location"]
            await enough.wait()
            midway = (await c.get(location, headers=auth)).json()
    assert midway["status"] == "pending"
    assert 0 < midway["counts"]["completed"] < 500
    asked_first = set(calls)
    done_first = await completed_items(settings)
    # Cut off by the stop: asked, and not recorded. At most what was in flight.
    interrupted = asked_first - done_first
    assert 0 < len(interrupted) <= settings.job_concurrency

    first_process = False
    second = create_app(settings)
    async with serving(second):
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            batch = await finished(c, auth, location)
        rows = await evaluations(second)

    assert batch["counts"] == {"pending": 0, "completed": 500, "failed": 0, "invalid": 0}
    assert len(rows) == 500
    assert Counter(r.item_index for r in rows) == Counter(range(500))
    assert {r.status for r in rows} == {"completed"}
    assert sorted(calls) == list(range(500))
    # Exactly the scorings cut off by the stop were asked again, once; none that was recorded.
    assert {item for item, n in calls.items() if n > 1} == interrupted
    assert max(calls.values()) == 2


async def completed_items(settings: Settings) -> set[int]:
    """The batch items recorded completed, read with an engine of its own."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.scalars(
                select(Evaluation.item_index).where(Evaluation.status == "completed")
            )
            return {index for index in rows if index is not None}
    finally:
        await engine.dispose()
