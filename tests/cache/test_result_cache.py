"""The scoring-result cache and the coalescing of identical requests, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from service.cache.backend import PREFIX
from service.config import Settings
from service.evaluations.canonical import Interview
from service.evaluations.schemas import EvaluationCreate
from service.main import create_app
from tests.cache.redis_server import RedisServer
from tests.conftest import ANALYZER_URL, LLM_BASE_URL, analysis, completion, interview, serving
from tests.conftest import scores_content as content
from tests.evaluations.test_create import stored_count

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
GOOD = content({"technical_depth": 4, "communication": 3})


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def held_until_joined(
    joiners: int, *, answer: httpx.Response | None = None
) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """An LLM mock that answers once `joiners` more requests have joined an identical one in
    flight (each counts itself as it joins): a condition, not a sleep. Bounded by the LLM
    timeout: without coalescing, the requests fail instead."""
    before = metric("scorer_coalesced_requests_total")

    async def llm(request: httpx.Request) -> httpx.Response:
        while metric("scorer_coalesced_requests_total") - before < joiners:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return answer if answer is not None else completion(GOOD)

    return llm


def someone_else() -> dict[str, Any]:
    return {"name": "John Roe", "email": "john@example.com", "external_id": "ats-1"}


async def test_a_repeat_is_served_from_the_cache_without_upstream_calls(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    llm = upstream.post(CHAT).mock(return_value=completion(GOOD))
    analyzer = upstream.post(ANALYZE).mock(return_value=analysis(82))
    hits, misses = metric("scorer_cache_hits_total"), metric("scorer_cache_misses_total")

    first = await client.post("/v1/evaluations", json=interview(), headers=auth)
    # Another candidate with the same interview: contact details are not part of the key.
    second = await client.post(
        "/v1/evaluations", json=interview(candidate=someone_else()), headers=auth
    )

    assert first.status_code == second.status_code == 201
    assert llm.call_count == 1
    assert analyzer.call_count == 1
    one, two = first.json(), second.json()
    assert one["cached"] is False
    assert two["cached"] is True
    assert two["id"] != one["id"]
    assert two["candidate"]["email"] == "john@example.com"
    for field in ("overall_score", "recommendation", "criteria", "summary", "portfolio"):
        assert two[field] == one[field]
    assert two["timings_ms"] == one["timings_ms"]
    assert await stored_count(app) == 2
    stored = await client.get(f"/v1/evaluations/{two['id']}", headers=auth)
    assert stored.json()["cached"] is True
    assert metric("scorer_cache_hits_total") == hits + 1
    assert metric("scorer_cache_misses_total") == misses + 1


@pytest.mark.parametrize(
    "change",
    [
        {
            "transcript": [
                {**turn, "answer": turn["answer"] + " Threads also help with blocking libraries."}
                for turn in interview()["transcript"]
            ]
        },
        {"position": {"title": "Staff Engineer", "level": "senior"}},
        {"rubric": {"criteria": [{"key": "technical_depth", "description": "Depth"}]}},
        {"portfolio": {"url": "https://github.com/someone-else"}},
    ],
    ids=["transcript", "position", "rubric", "portfolio"],
)
async def test_what_determines_the_score_is_part_of_the_key(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    change: dict[str, Any],
) -> None:
    llm = upstream.post(CHAT).mock(return_value=completion(GOOD))
    upstream.post(ANALYZE).mock(return_value=analysis())
    other = content({"technical_depth": 4})
    if "rubric" in change:
        llm.side_effect = [completion(GOOD), completion(other)]

    first = await client.post("/v1/evaluations", json=interview(), headers=auth)
    second = await client.post("/v1/evaluations", json=interview(**change), headers=auth)

    assert first.status_code == second.status_code == 201
    assert llm.call_count == 2
    assert second.json()["cached"] is False


async def test_model_and_prompt_version_are_part_of_the_key(settings: Settings) -> None:
    payload = EvaluationCreate.model_validate(interview())
    other_model = settings.model_copy(update={"llm_model": "gpt-other"})
    other_samples = settings.model_copy(update={"scoring_samples": 3})

    key = Interview.of(payload, tenant="default").result_key(settings)

    assert Interview.of(payload, tenant="default").result_key(other_model) != key
    assert Interview.of(payload, tenant="default").result_key(other_samples) != key
    other_candidate = EvaluationCreate.model_validate(interview(candidate=someone_else()))
    assert key == Interview.of(other_candidate, tenant="default").result_key(settings)


async def test_a_partial_result_is_not_cached(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    llm = upstream.post(CHAT).mock(return_value=completion(GOOD))
    analyzer = upstream.post(ANALYZE).mock(
        side_effect=[httpx.Response(503), analysis(70), analysis(70)]
    )

    partial = await client.post("/v1/evaluations", json=interview(), headers=auth)
    complete = await client.post("/v1/evaluations", json=interview(), headers=auth)
    repeat = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert partial.json()["partial"] is True
    assert complete.json()["partial"] is False
    assert complete.json()["cached"] is False
    assert repeat.json()["cached"] is True
    assert llm.call_count == 2
    assert analyzer.call_count == 2


async def test_fifty_identical_requests_at_once_make_one_llm_call(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    # The call is held until the 49 others have joined it: they must share it, not find its
    # result in the cache afterwards.
    llm = upstream.post(CHAT).mock(side_effect=held_until_joined(49))
    analyzer = upstream.post(ANALYZE).mock(return_value=analysis())
    shared_before = metric("scorer_coalesced_requests_total") + metric("scorer_cache_hits_total")

    responses = await asyncio.gather(
        *(client.post("/v1/evaluations", json=interview(), headers=auth) for _ in range(50))
    )

    assert [r.status_code for r in responses] == [201] * 50
    assert llm.call_count == 1
    assert analyzer.call_count == 1
    assert len({r.json()["id"] for r in responses}) == 50
    assert sorted(r.json()["cached"] for r in responses) == [False] + [True] * 49
    assert await stored_count(app) == 50
    shared = metric("scorer_coalesced_requests_total") + metric("scorer_cache_hits_total")
    assert shared - shared_before == 49


async def test_an_upstream_error_reaches_every_coalesced_request(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    rejection = httpx.Response(400, json={"error": {"message": "bad model"}})
    llm = upstream.post(CHAT).mock(side_effect=held_until_joined(9, answer=rejection))
    upstream.post(ANALYZE).mock(return_value=analysis())

    responses = await asyncio.gather(
        *(client.post("/v1/evaluations", json=interview(), headers=auth) for _ in range(10))
    )

    assert {r.status_code for r in responses} == {502}
    assert {r.json()["type"] for r in responses} == {responses[0].json()["type"]}
    assert llm.call_count == 1
    assert await stored_count(app) == 0


@pytest.mark.parametrize("backend_kind", ["redis"], indirect=True)
async def test_identical_requests_on_two_replicas_make_one_llm_call(
    settings: Settings, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    # Held until each replica's other 9 requests have joined its own in-flight call; the other
    # replica's first request waits on the Redis lock meanwhile.
    llm = upstream.post(CHAT).mock(side_effect=held_until_joined(18))
    upstream.post(ANALYZE).mock(return_value=analysis())
    assert app.state.cache.kind == "redis"
    misses = metric("scorer_cache_misses_total")
    shared_before = metric("scorer_coalesced_requests_total") + metric("scorer_cache_hits_total")
    replica = create_app(settings)
    async with (
        serving(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as one,
        httpx.AsyncClient(transport=httpx.ASGITransport(replica), base_url="http://b") as two,
    ):
        responses = await asyncio.gather(
            *(
                c.post("/v1/evaluations", json=interview(), headers=auth)
                for _ in range(10)
                for c in (one, two)
            )
        )

    assert [r.status_code for r in responses] == [201] * 20
    assert llm.call_count == 1
    assert sum(not r.json()["cached"] for r in responses) == 1
    assert metric("scorer_cache_misses_total") == misses + 1
    shared = metric("scorer_coalesced_requests_total") + metric("scorer_cache_hits_total")
    assert shared - shared_before == 19


@pytest.mark.parametrize("backend_kind", ["redis"], indirect=True)
async def test_a_dead_lock_holder_is_not_waited_for_forever(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    settings: Settings,
    redis: RedisServer,
) -> None:
    from redis.asyncio import Redis

    llm = upstream.post(CHAT).mock(return_value=completion(GOOD))
    upstream.post(ANALYZE).mock(return_value=analysis())
    key = Interview.of(EvaluationCreate.model_validate(interview()), tenant="default").result_key(
        settings
    )
    # A replica took the lock for this interview and died: nobody refreshes or releases it.
    async with Redis.from_url(redis.url) as raw:
        await raw.set(f"{PREFIX}:inflight:{key}:lock", b"dead-holder", px=300)

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert response.status_code == 201
    assert response.json()["cached"] is False
    assert llm.call_count == 1
