"""Every reply shape of docs/llm-replies.md: what real OpenAI-compatible servers send back, and
what the client of the API gets and what is stored for each."""

from __future__ import annotations

import copy
import email.utils
import json
import time
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import interview
from tests.evaluations.test_create import stored_count
from tests.jobs.helpers import ASYNC, eventually
from tests.llm.helpers import CHAT, SCORES, assert_problem, chat, provenance, scores

EXPECTED = {"technical_depth": 4, "communication": 3}
TEXT = json.dumps(SCORES)


async def evaluate(client: httpx.AsyncClient, auth: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/evaluations", json=interview(), headers=auth)


async def only_attempt(client: httpx.AsyncClient, auth: dict[str, str], body: Any) -> Any:
    [[attempt]] = (await provenance(client, auth, body["id"]))["samples"]
    return attempt


# --- the JSON is somewhere in the answer


@pytest.mark.parametrize(
    ("text", "found_in"),
    [
        (f"```json\n{json.dumps(SCORES, indent=2)}\n```", "markdown_fence"),
        (f"Here is my assessment.\n```\n{TEXT}\n```\nThank you.", "markdown_fence"),
        (f"Here is my assessment of the candidate: {TEXT}\nI hope it helps.", "surrounding_text"),
        (f"<think>The rubric wants {{criteria}}; weigh each.</think>\n{TEXT}", "surrounding_text"),
    ],
    ids=["fence", "fence-in-prose", "after-a-sentence", "after-a-think-block"],
)
async def test_json_inside_text_is_found_and_where_is_recorded(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    text: str,
    found_in: str,
) -> None:
    route = upstream.post(CHAT).mock(return_value=chat(text))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == EXPECTED
    assert route.call_count == 1
    attempt = await only_attempt(client, auth, response.json())
    assert attempt["extracted_from"] == found_in
    assert attempt["raw_output"] == text


async def test_an_answer_in_a_tool_call_instead_of_content_is_taken(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    call = {"id": "call_1", "type": "function"}
    call["function"] = {"name": "interview_scores", "arguments": TEXT}  # type: ignore[assignment]
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    upstream.post(CHAT).mock(return_value=chat(message=message, finish_reason="tool_calls"))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == EXPECTED
    attempt = await only_attempt(client, auth, response.json())
    assert attempt["extracted_from"] == "tool_call"
    assert attempt["raw_output"] == TEXT


async def test_content_as_a_list_of_text_parts_is_joined(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    parts = [{"type": "text", "text": TEXT[:40]}, {"type": "text", "text": TEXT[40:]}]
    upstream.post(CHAT).mock(return_value=chat(message={"role": "assistant", "content": parts}))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == EXPECTED


# --- the model says no, or stops early


@pytest.mark.parametrize(
    "reply",
    [
        chat(message={"role": "assistant", "content": None, "refusal": "I can't assess people."}),
        chat(None, finish_reason="content_filter"),
    ],
    ids=["refusal", "content-filter"],
)
async def test_a_refusal_is_502_at_once_and_stores_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    reply: httpx.Response,
) -> None:
    route = upstream.post(CHAT).mock(return_value=reply)

    response = await evaluate(client, auth)

    body = assert_problem(response, 502, "llm-refused")
    assert route.call_count == 1  # asked again at temperature 0, it says the same
    if "refusal" in reply.json()["choices"][0]["message"]:
        assert body["detail"] == "I can't assess people."
    assert await stored_count(app) == 0


async def test_an_answer_cut_off_at_the_length_limit_is_502_at_once(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    route = upstream.post(CHAT).mock(return_value=chat(TEXT[:70], finish_reason="length"))

    response = await evaluate(client, auth)

    body = assert_problem(response, 502, "llm-output-truncated")
    assert "finish_reason length" in body["detail"]
    assert route.call_count == 1  # a repair would be cut off at the same limit
    assert await stored_count(app) == 0


async def test_a_complete_answer_is_taken_whatever_its_finish_reason(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=chat(finish_reason="length"))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert (await only_attempt(client, auth, response.json()))["finish_reason"] == "length"


# --- the envelope


async def test_no_usage_is_unknown_usage_not_an_error(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=chat(usage=None))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert response.json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    attempt = await only_attempt(client, auth, response.json())
    assert (attempt["prompt_tokens"], attempt["completion_tokens"]) == (None, None)


async def test_unknown_fields_are_ignored_at_every_level_and_listed(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["overall_score"] = 70
    content["criteria"]["leadership"] = content["criteria"]["communication"]
    content["criteria"]["technical_depth"]["confidence"] = 0.9
    content["criteria"]["technical_depth"]["evidence"][0]["turn"] = 1
    message = {"role": "assistant", "content": json.dumps(content), "reasoning_content": "..."}
    upstream.post(CHAT).mock(
        return_value=chat(message=message, provider_specific_fields={}, service_tier="default")
    )

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == EXPECTED
    assert (await only_attempt(client, auth, response.json()))["normalized"] == [
        "ignored: overall_score",
        "ignored: criteria.leadership",
        "ignored: criteria.technical_depth.confidence",
        "ignored: criteria.technical_depth.evidence[0].turn",
    ]


async def test_numbers_and_booleans_as_strings_are_read(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["criteria"]["technical_depth"].update(score="4", insufficient_evidence="false")
    content["criteria"]["communication"]["score"] = 3.0
    usage = {"prompt_tokens": "120", "completion_tokens": "60", "total_tokens": "180"}
    upstream.post(CHAT).mock(return_value=chat(content, usage=usage))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == EXPECTED
    assert response.json()["usage"] == {"prompt_tokens": 120, "completion_tokens": 60}


async def test_an_empty_choice_list_is_asked_again_once(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    route = upstream.post(CHAT).mock(side_effect=[chat(choices=[]), chat()])

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 2
    # Nothing to repair: the same conversation again.
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first["messages"] == second["messages"]


async def test_an_empty_choice_list_twice_is_502(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    route = upstream.post(CHAT).mock(return_value=chat(choices=[]))

    response = await evaluate(client, auth)

    body = assert_problem(response, 502, "llm-invalid-output")
    assert "empty choice list" in body["detail"]
    assert route.call_count == 2
    assert await stored_count(app) == 0


HTML_PAGE = httpx.Response(
    200,
    headers={"content-type": "text/html; charset=utf-8"},
    text="<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>",
)
NOT_A_COMPLETION = [
    HTML_PAGE,
    httpx.Response(200, json={"error": {"message": "upstream overloaded", "code": 502}}),
    httpx.Response(200, headers={"content-type": "application/json"}, text="{truncated"),
]


@pytest.mark.parametrize("page", NOT_A_COMPLETION, ids=["html", "error-object", "broken-json"])
async def test_a_200_that_is_not_a_completion_is_retried_like_a_5xx(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    waits: list[float],
    page: httpx.Response,
) -> None:
    route = upstream.post(CHAT).mock(side_effect=[page, chat()])

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 2
    assert len(waits) == 1
    [[failed, _]] = (await provenance(client, auth, response.json()["id"]))["samples"]
    assert failed["error"].startswith("NotACompletion: status 200 with ")


async def test_a_proxy_page_past_the_retries_is_503_and_stores_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    waits: list[float],
) -> None:
    route = upstream.post(CHAT).mock(return_value=HTML_PAGE)

    response = await evaluate(client, auth)

    body = assert_problem(response, 503, "llm-unavailable")
    assert "text/html" in body["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert route.call_count == 1 + app.state.settings.llm_max_retries
    assert await stored_count(app) == 0


# --- rate limits


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "2"}, 2, 2),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5, 1.5),
        # A date six seconds ahead, made when the test runs: whatever is left of it (a
        # jittered backoff would wait at most 1 s).
        (None, 4, 6),
        # Unreadable: the jittered backoff instead (whose first wait is at most 1 s).
        ({"Retry-After": "inf"}, 0, 1),
    ],
    ids=["seconds", "milliseconds", "http-date", "unreadable"],
)
async def test_a_429_waits_as_long_as_retry_after_says(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    waits: list[float],
    headers: dict[str, str] | None,
    low: float,
    high: float,
) -> None:
    headers = headers or {"Retry-After": email.utils.formatdate(time.time() + 6, usegmt=True)}
    route = upstream.post(CHAT).mock(side_effect=[httpx.Response(429, headers=headers), chat()])

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 2
    [waited] = waits
    assert low <= waited <= high


async def test_an_exhausted_quota_is_not_retried(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    error = {"message": "You exceeded your current quota.", "type": "insufficient_quota"}
    error["code"] = "insufficient_quota"
    route = upstream.post(CHAT).mock(return_value=httpx.Response(429, json={"error": error}))

    response = await evaluate(client, auth)

    body = assert_problem(response, 502, "llm-rejected")
    assert "insufficient_quota" in body["detail"]
    assert route.call_count == 1
    assert await stored_count(app) == 0


# --- what the schema allows and the service used to refuse


async def test_a_criterion_abstains_when_it_says_so_or_gives_no_score(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["criteria"]["technical_depth"].update(insufficient_evidence=True, score=4)
    content["criteria"]["communication"].update(insufficient_evidence=False, score=None)
    route = upstream.post(CHAT).mock(return_value=chat(content))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 1
    body = response.json()
    assert [(c["score"], c["insufficient_evidence"]) for c in body["criteria"]] == [
        (None, True),
        (None, True),
    ]
    assert (body["overall_score"], body["recommendation"]) == (None, "insufficient_evidence")
    assert (await only_attempt(client, auth, body))["normalized"] == [
        "criteria.technical_depth.score: 4 discarded, insufficient_evidence is true",
        "criteria.communication.insufficient_evidence: true, the score is null",
    ]


async def test_criterion_keys_that_are_model_attribute_names_are_scored(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    keys = ["json", "model_config", "schema", "copy"]
    rubric = {"criteria": [{"key": key, "description": f"About {key}"} for key in keys]}
    upstream.post(CHAT).mock(return_value=chat(SCORES | {"criteria": _scored(keys)}))

    response = await client.post("/v1/evaluations", json=interview(rubric=rubric), headers=auth)

    assert response.status_code == 201, response.text
    assert scores(response.json()) == dict.fromkeys(keys, 3)


def _scored(keys: list[str]) -> dict[str, Any]:
    quote = [{"quote": "For CPU-bound work the event loop gives nothing"}]
    return {
        key: {"reasoning": "r", "evidence": quote, "insufficient_evidence": False, "score": 3}
        for key in keys
    }


async def test_text_that_cannot_be_stored_loses_only_those_characters(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["criteria"]["technical_depth"]["reasoning"] = "Clear\x00 answer \ud800here"
    content["summary"] = "Solid\x00."
    upstream.post(CHAT).mock(return_value=chat(content))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["criteria"][0]["rationale"] == "Clear answer here"
    assert body["summary"] == "Solid."
    stored = (await client.get(f"/v1/evaluations/{body['id']}", headers=auth)).json()
    assert stored["criteria"][0]["rationale"] == "Clear answer here"
    assert (await only_attempt(client, auth, body))["normalized"] == [
        "criteria.technical_depth.reasoning: NUL characters and lone surrogates dropped",
        "summary: NUL characters and lone surrogates dropped",
    ]


async def test_a_lone_surrogate_in_the_envelope_is_dropped_from_what_is_kept(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["summary"] = "Solid \ud800answers."
    # The surrogate escaped once, in the envelope: the content text itself holds it.
    upstream.post(CHAT).mock(return_value=chat(json.dumps(content, ensure_ascii=False)))

    response = await evaluate(client, auth)

    assert response.status_code == 201, response.text
    assert response.json()["summary"] == "Solid answers."
    attempt = await only_attempt(client, auth, response.json())
    assert json.loads(attempt["raw_output"])["summary"] == "Solid answers."


# --- the worker scores asynchronous evaluations by the same rules


async def _settled(client: httpx.AsyncClient, auth: dict[str, str], location: str) -> Any:
    async def done() -> bool:
        polled = await client.get(location, headers=auth)
        return bool(polled.json()["status"] != "pending")

    await eventually(done)
    return (await client.get(location, headers=auth)).json()


async def test_the_worker_normalizes_as_the_api_does(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    content: dict[str, Any] = copy.deepcopy(SCORES)
    content["criteria"]["technical_depth"].update(insufficient_evidence=True, score=4)
    upstream.post(CHAT).mock(return_value=chat(f"```json\n{json.dumps(content)}\n```"))

    accepted = await client.post("/v1/evaluations", json=interview(), headers=auth | ASYNC)
    final = await _settled(client, auth, accepted.headers["location"])

    assert final["status"] == "completed"
    assert scores(final) == {"technical_depth": None, "communication": 3}
    attempt = await only_attempt(client, auth, final)
    assert attempt["extracted_from"] == "markdown_fence"
    assert attempt["normalized"] == [
        "criteria.technical_depth.score: 4 discarded, insufficient_evidence is true"
    ]


@pytest.mark.parametrize(
    ("reply", "slug"),
    [
        (chat(message={"role": "assistant", "content": None, "refusal": "No."}), "llm-refused"),
        (chat(TEXT[:70], finish_reason="length"), "llm-output-truncated"),
        (HTML_PAGE, "llm-unavailable"),
    ],
    ids=["refusal", "cut-off", "html-page"],
)
async def test_an_async_evaluation_that_fails_is_stored_failed_with_the_reason(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    waits: list[float],
    reply: httpx.Response,
    slug: str,
) -> None:
    upstream.post(CHAT).mock(return_value=reply)

    accepted = await client.post("/v1/evaluations", json=interview(), headers=auth | ASYNC)
    final = await _settled(client, auth, accepted.headers["location"])

    assert final["status"] == "failed"
    assert final["error"]["type"].endswith(slug)
    assert final["overall_score"] is None
