"""A NUL character anywhere in the text the API takes is a 422 naming the field: PostgreSQL's
text cannot store one, and a request carrying it answered 500 there (found probing the
fuzzer's ground, tests/contract/test_fuzz.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
)
from tests.evaluations.test_create import stored_count

NUL = "\x00"
TURN = {"question": "When would you not use asyncio?", "answer": "For CPU-bound work."}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"candidate": {"name": f"Jane{NUL}", "email": "jane@example.com"}}, "candidate.name"),
        (
            {"candidate": {"name": "Jane", "email": "j@example.com", "external_id": NUL}},
            "candidate.external_id",
        ),
        ({"position": {"title": f"Engineer{NUL}"}}, "position.title"),
        ({"position": {"title": "Engineer", "level": NUL}}, "position.level"),
        ({"transcript": [{**TURN, "answer": f"For{NUL}"}]}, "transcript.0.answer"),
        ({"transcript": [{**TURN, "question": f"Why{NUL}"}]}, "transcript.0.question"),
        (
            {"rubric": {"criteria": [{"key": "depth", "description": f"Depth{NUL}"}]}},
            "rubric.criteria.0.description",
        ),
    ],
)
async def test_a_nul_in_a_request_is_refused_naming_the_field(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    app: FastAPI,
    changes: dict[str, Any],
    field: str,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(**changes), headers=auth)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert await stored_count(app) == 0


@pytest.mark.parametrize(
    "url",
    [
        "/v1/evaluations?position=a%00b",
        "/v1/evaluations?candidate_email=a%00b",
        "/v1/evaluations?cursor=a%00b",
        "/v1/evaluations/a%00b",
        "/v1/evaluation-batches/a%00b",
    ],
)
async def test_a_nul_in_a_query_or_path_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], url: str
) -> None:
    response = await client.get(url, headers=auth)

    assert response.status_code == 422
    assert response.json()["type"].endswith("/validation")


async def test_a_nul_in_a_review_reason_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis(82))
    created = await client.post("/v1/evaluations", json=interview(), headers=auth)
    assert created.status_code == 201

    response = await client.post(
        f"/v1/evaluations/{created.json()['id']}/reviews",
        json={"decision": "hire", "reason": f"Strong{NUL}"},
        headers=auth,
    )

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["reason"]
