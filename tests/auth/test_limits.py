"""Per-key limits: a key over its rate or its cap on requests in flight gets 429 problems with
Retry-After, and another key is not slowed by it (judged by what each sees, never by time)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.main import openapi_document
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    KeyMaker,
    analysis,
    completion,
    interview,
    scores_content,
)
from tests.evaluations.test_create import stored_count
from tests.jobs.helpers import eventually

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANSWER = completion(scores_content({"technical_depth": 4, "communication": 3}))


def by(name: str, number: int = 0) -> dict[str, Any]:
    """An interview the LLM mock can attribute to a client by its position's title; its
    number makes it a request of its own (no two share a scoring)."""
    body = interview(position={"title": f"Engineer for {name}"}, notify=None)
    body["transcript"][0]["answer"] += f" (take {number})"
    return body


def asker(request: httpx.Request) -> str:
    prompt = " ".join(m["content"] for m in json.loads(request.content)["messages"])
    return "busy" if "Engineer for busy" in prompt else "other"


@pytest.mark.parametrize("settings_overrides", [{"max_in_flight_per_key": 3}])
async def test_a_key_at_its_cap_is_refused_and_does_not_hold_up_another_key(
    client: httpx.AsyncClient, make_key: KeyMaker, upstream: respx.MockRouter, app: FastAPI
) -> None:
    busy, other = await make_key(name="busy"), await make_key(name="other")
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    release = asyncio.Event()
    busy_in_llm = 0
    busy_waiting = asyncio.Event()

    async def llm(request: httpx.Request) -> httpx.Response:
        nonlocal busy_in_llm
        if asker(request) == "busy":
            busy_in_llm += 1
            if busy_in_llm == 3:
                busy_waiting.set()
            await release.wait()  # the busy key's calls hang until the other key is done
        return ANSWER

    upstream.post(CHAT).mock(side_effect=llm)
    busy_requests = [
        asyncio.create_task(
            client.post(
                "/v1/evaluations",
                json=by("busy", i),
                headers=busy,
            )
        )
        for i in range(10)
    ]
    await busy_waiting.wait()

    # The seven beyond the cap are answered while three hang upstream.
    async def seven_answered() -> bool:
        return sum(t.done() for t in busy_requests) == 7

    await eventually(seven_answered)
    refused = [t for t in busy_requests if t.done()]
    others = await asyncio.gather(
        *(
            client.post(
                "/v1/evaluations",
                json=by("other", i),
                headers=other,
            )
            for i in range(3)
        )
    )
    reads = await client.get("/v1/evaluations", headers=other)
    busy_read = await client.get("/v1/evaluations", headers=busy)
    assert not release.is_set()  # all of that while the busy key was at its cap
    release.set()
    answered = await asyncio.gather(*busy_requests)

    assert [r.status_code for r in others] == [201, 201, 201]
    assert reads.status_code == 200
    assert len(refused) == 7
    assert sorted(r.status_code for r in answered) == [201] * 3 + [429] * 7
    assert busy_read.status_code == 429
    problem = refused[0].result()
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.headers["retry-after"] == "1"
    assert problem.json()["type"].endswith("/too-many-in-flight")
    assert "SCORER_MAX_IN_FLIGHT_PER_KEY" in problem.json()["detail"]
    assert await stored_count(app) == 6
    # Once its requests are answered, the key has its whole allowance back.
    again = await client.post("/v1/evaluations", json=by("busy"), headers=busy)
    assert again.status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"max_in_flight_per_key": 1}])
async def test_a_refused_or_failed_request_gives_its_place_back(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=httpx.Response(400, json={"error": {}}))
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())

    statuses = [
        (await client.post("/v1/evaluations", json=interview(), headers=auth)).status_code,
        (await client.post("/v1/evaluations", json={"bad": 1}, headers=auth)).status_code,
        (await client.get("/v1/evaluations/nope", headers=auth)).status_code,
        (await client.get("/v1/evaluations", headers=auth)).status_code,
    ]

    assert statuses == [502, 422, 404, 200]


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_per_s": 0.01, "rate_limit_burst": 3}])
async def test_a_key_over_its_rate_is_refused_and_another_key_is_not(
    client: httpx.AsyncClient, make_key: KeyMaker, upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=ANSWER)
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    busy, other = await make_key(name="busy"), await make_key(name="other")

    # A token every 100 s: the burst of three is all this test gets.
    busy_answers = [
        await client.post("/v1/evaluations", json=by("busy"), headers=busy) for _ in range(5)
    ]
    other_answers = [
        await client.post("/v1/evaluations", json=by("other"), headers=other) for _ in range(3)
    ]

    assert [r.status_code for r in busy_answers] == [201, 201, 201, 429, 429]
    assert [r.status_code for r in other_answers] == [201, 201, 201]
    problem = busy_answers[3]
    assert problem.headers["content-type"] == "application/problem+json"
    assert 1 <= int(problem.headers["retry-after"]) <= 100
    assert problem.json()["type"].endswith("/rate-limited")
    assert "SCORER_RATE_LIMIT_PER_S" in problem.json()["detail"]
    assert await stored_count(app) == 6


async def test_limits_are_off_by_default(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    answers = await asyncio.gather(
        *(client.get("/v1/evaluations", headers=auth) for _ in range(50))
    )

    assert {r.status_code for r in answers} == {200}
    assert app.state.limits is None


def test_the_openapi_document_declares_the_429_with_retry_after() -> None:
    document = openapi_document()
    operations = [
        (path, operation)
        for path, methods in document["paths"].items()
        for operation in methods.values()
    ]
    keyed = [(p, o) for p, o in operations if "security" in o]

    assert keyed
    for path, operation in keyed:
        response = operation["responses"]["429"]
        assert "Retry-After" in response["headers"], path
        assert "application/problem+json" in response["content"], path
    for path, operation in operations:
        if "security" not in operation:
            assert "429" not in operation["responses"], path
