"""Input bounds: what exceeds them is rejected naming the field, never truncated."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.evaluations.schemas import (
    MAX_ANSWER_CHARS,
    MAX_CRITERIA,
    MAX_RECRUITERS,
    MAX_TRANSCRIPT_TURNS,
)
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
)
from tests.evaluations.test_create import stored_count

TURN = {"question": "Why?", "answer": "Because."}


def criteria(n: int) -> dict[str, Any]:
    return {"criteria": [{"key": f"c{i}", "description": "d"} for i in range(n)]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"transcript": [TURN] * (MAX_TRANSCRIPT_TURNS + 1)}, "transcript"),
        ({"transcript": []}, "transcript"),
        (
            {"transcript": [{"question": "Q", "answer": "x" * (MAX_ANSWER_CHARS + 1)}]},
            "transcript.0.answer",
        ),
        ({"rubric": criteria(MAX_CRITERIA + 1)}, "rubric.criteria"),
        ({"rubric": {"criteria": [{"key": "a", "description": "d"}] * 2}}, "rubric.criteria"),
        (
            {"rubric": {"criteria": [{"key": "Bad Key", "description": "d"}]}},
            "rubric.criteria.0.key",
        ),
        (
            {"notify": {"recruiters": [f"r{i}@example.com" for i in range(MAX_RECRUITERS + 1)]}},
            "notify.recruiters",
        ),
        ({"candidate": {"name": "A", "email": "not-an-email"}}, "candidate.email"),
        ({"portfolio": {"url": "ftp://example.com/x"}}, "portfolio.url"),
        ({"language": "xx"}, "language"),
        ({"surprise": True}, "surprise"),
    ],
    ids=[
        "too-many-turns",
        "no-turns",
        "answer-too-long",
        "too-many-criteria",
        "duplicate-criteria",
        "bad-criterion-key",
        "too-many-recruiters",
        "bad-email",
        "bad-portfolio-url",
        "unknown-language",
        "unknown-field",
    ],
)
async def test_out_of_bounds_input_is_422_naming_the_field(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    changes: dict[str, Any],
    field: str,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(**changes), headers=auth)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert field in [error["field"] for error in body["errors"]]
    assert field in body["detail"]
    assert not upstream.calls
    assert await stored_count(app) == 0


async def test_bounds_at_the_limit_are_accepted(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 3, "communication": 3}))
    )
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    # Varied words: a single word repeated would be rejected as a transcription loop.
    rng = random.Random(0)
    vocabulary = ("event", "loop", "process", "thread", "await", "socket", "query", "index")
    long_answer = " ".join(rng.choice(vocabulary) for _ in range(MAX_ANSWER_CHARS))
    long_answer = long_answer[:MAX_ANSWER_CHARS]
    body = interview(transcript=[{"question": "Q", "answer": long_answer}] * 20)

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 4096}])
async def test_a_body_over_the_size_limit_is_413(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    body = interview(transcript=[{"question": "Q", "answer": "x" * 5000}])

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "SCORER_MAX_BODY_BYTES" in response.json()["detail"]
    assert not upstream.calls
    assert await stored_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 4096}])
async def test_a_chunked_body_over_the_size_limit_is_413(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post(
        "/v1/evaluations",
        content=chunks(),
        headers={**auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert not upstream.calls


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post(
        "/v1/evaluations",
        content=b'{"candidate": ',
        headers={**auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
