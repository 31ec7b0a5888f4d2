"""The LLM rows of the failure table, through the API, with the real SDK and retry code."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.llm import client as llm_client
from tests.conftest import completion, interview, scores_content
from tests.evaluations.test_create import stored_count
from tests.llm.helpers import CHAT, assert_problem

GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the backoff's shape but not its seconds."""
    monkeypatch.setattr(llm_client, "BACKOFF_BASE_S", 0.01)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_llm_errors_are_retried(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, status: int
) -> None:
    route = upstream.post(CHAT).mock(
        side_effect=[httpx.Response(status), httpx.Response(status), GOOD]
    )

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 3


async def test_llm_down_past_the_retries_is_503_with_retry_after_and_stores_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    route = upstream.post(CHAT).mock(return_value=httpx.Response(503))

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 503, "llm-unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert route.call_count == 1 + app.state.settings.llm_max_retries
    assert await stored_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"scoring_deadline_s": 5}])
async def test_rate_limit_retry_after_is_honoured_and_reported(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    # A Retry-After longer than the deadline allows: give up at once, and pass it on.
    route = upstream.post(CHAT).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "20"})
    )

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 503, "llm-unavailable")
    assert response.headers["retry-after"] == "20"
    assert route.call_count == 1


async def test_llm_timeout_is_504_and_stores_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(side_effect=httpx.ReadTimeout("slow"))

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 504, "llm-timeout")
    assert await stored_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"llm_timeout_s": 0.2}])
async def test_llm_slower_than_its_deadline_is_504(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return GOOD

    upstream.post(CHAT).mock(side_effect=slow)

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 504, "llm-timeout")
    assert await stored_count(app) == 0


async def test_invalid_output_is_retried_once_with_the_validation_error(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    missing_criterion = {"criteria": {"technical_depth": {}}, "summary": "x"}
    route = upstream.post(CHAT).mock(side_effect=[completion(missing_criterion), GOOD])

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert response.status_code == 201, response.text
    assert response.json()["usage"] == {"prompt_tokens": 200, "completion_tokens": 100}
    repair = json.loads(route.calls[1].request.content)["messages"]
    assert repair[-2] == {"role": "assistant", "content": json.dumps(missing_criterion)}
    assert "criteria.communication" in repair[-1]["content"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json at all",
        {"criteria": {"technical_depth": {}, "communication": {}}, "summary": "x"},
        scores_content({"technical_depth": 7, "communication": 3}),
    ],
    ids=["not-json", "empty-criteria", "score-out-of-range"],
)
async def test_invalid_output_twice_is_502_and_stores_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    bad: Any,
) -> None:
    route = upstream.post(CHAT).mock(return_value=completion(bad))

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 502, "llm-invalid-output")
    assert route.call_count == 2
    assert await stored_count(app) == 0


async def test_llm_rejecting_the_request_is_502(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    route = upstream.post(CHAT).mock(
        return_value=httpx.Response(401, json={"error": {"message": "bad key"}})
    )

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    body = assert_problem(response, 502, "llm-rejected")
    assert "401" in body["detail"]
    assert "sk-test" not in response.text
    assert route.call_count == 1
    assert await stored_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"llm_max_concurrency": 2}])
async def test_calls_over_the_concurrency_cap_wait_instead_of_failing(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    in_flight = peak = 0

    async def llm(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return GOOD

    upstream.post(CHAT).mock(side_effect=llm)

    # Distinct interviews: identical ones would share one call (tests/cache).
    bodies = [interview(position={"title": f"Engineer {i}"}) for i in range(8)]
    responses = await asyncio.gather(
        *(client.post("/v1/evaluations", json=body, headers=auth) for body in bodies)
    )

    assert [r.status_code for r in responses] == [201] * 8
    assert peak == 2


@pytest.mark.parametrize("settings_overrides", [{"scoring_samples": 3}])
async def test_several_samples_report_median_and_spread(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    route = upstream.post(CHAT).mock(
        side_effect=[
            completion(scores_content({"technical_depth": 2, "communication": 3})),
            completion(scores_content({"technical_depth": 5, "communication": 3})),
            completion(scores_content({"technical_depth": 4, "communication": 3})),
        ]
    )

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    assert route.call_count == 3
    depth, communication = body["criteria"]
    assert (depth["score"], depth["spread"]) == (4, 3)
    assert (communication["score"], communication["spread"]) == (3, 0)
    assert body["needs_review"] is True
