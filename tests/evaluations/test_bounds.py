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
from service.main import openapi_document
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
    assert response.json()["errors"][0]["field"] == "body"
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


REQUEST_SCHEMAS = ("EvaluationCreate", "BatchCreate", "ReviewCreate")


def _unbounded(schema: dict[str, Any], schemas: dict[str, Any], path: str) -> list[str]:
    """Where a request schema lets a client send a string, a list, an object or a number of
    any size."""
    if "$ref" in schema:
        return _unbounded(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas, path)
    found: list[str] = []
    for option in schema.get("anyOf", []):
        found += _unbounded(option, schemas, path)
    kind = schema.get("type")
    if kind == "string" and not {"maxLength", "enum", "const"} & set(schema):
        found.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(path)
        found += _unbounded(schema.get("items", {}), schemas, f"{path}[]")
    if kind in ("number", "integer") and not {"maximum", "exclusiveMaximum"} & set(schema):
        found.append(path)
    if kind == "object":
        properties = schema.get("properties", {})
        names = schema.get("propertyNames", {})
        if not properties and "maxProperties" not in schema and "enum" not in names:
            found.append(path)
        for name, child in properties.items():
            found += _unbounded(child, schemas, f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            found += _unbounded(extra, schemas, f"{path}.*")
    return found


def test_the_openapi_document_states_a_bound_on_everything_a_client_sends() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    unbounded = [
        spot
        for name in REQUEST_SCHEMAS
        for spot in _unbounded(schemas[name], schemas, name)
        # Each item is an EvaluationCreate, validated on its own (its bounds are above).
        if spot != "BatchCreate.items[]"
    ]
    parameters = [
        f"{path} {parameter['name']}"
        for path, methods in document["paths"].items()
        for operation in methods.values()
        for parameter in operation.get("parameters", [])
        if _unbounded(parameter["schema"], schemas, parameter["name"])
    ]

    assert unbounded == []
    assert parameters == []
    creation = schemas["EvaluationCreate"]["properties"]
    assert creation["transcript"]["maxItems"] == MAX_TRANSCRIPT_TURNS
    assert schemas["Rubric"]["properties"]["criteria"]["maxItems"] == MAX_CRITERIA
    assert schemas["Turn"]["properties"]["answer"]["maxLength"] == MAX_ANSWER_CHARS
    weight = schemas["Criterion"]["properties"]["weight"]
    assert (weight["exclusiveMinimum"], weight["maximum"]) == (0, 100)
    assert schemas["BatchCreate"]["properties"]["items"]["maxItems"] == 10_000
    post = document["paths"]["/v1/evaluations"]["post"]["responses"]
    assert "SCORER_MAX_BODY_BYTES" in post["413"]["description"]


@pytest.mark.parametrize("settings_overrides", [{"max_batch_items": 2}])
async def test_a_batch_over_its_item_bound_is_413_naming_the_field(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    response = await client.post(
        "/v1/evaluation-batches", json={"items": [interview()] * 3}, headers=auth
    )

    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "items"
    assert "SCORER_MAX_BATCH_ITEMS" in response.json()["detail"]
    assert await stored_count(app) == 0
