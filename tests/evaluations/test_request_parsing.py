"""POST /v1/evaluations resolves its own arguments: what a client sees when they are wrong."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import KeyMaker, interview


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    return body


def _fields(problem: dict[str, object]) -> list[str]:
    errors = problem["errors"]
    assert isinstance(errors, list)
    return [error["field"] for error in errors]


async def test_a_body_that_is_not_json_is_a_422_naming_the_body(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/evaluations",
        content=b'{"candidate": ',
        headers={**auth, "Content-Type": "application/json"},
    )

    problem = _problem(response, 422)
    assert _fields(problem) == ["body"]
    assert problem["errors"][0]["type"] == "json_invalid"  # type: ignore[index]


async def test_no_body_is_a_422(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post("/v1/evaluations", headers=auth)

    problem = _problem(response, 422)
    assert problem["errors"] == [{"field": "body", "message": "Field required", "type": "missing"}]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_of_another_media_type_is_a_422(
    client: httpx.AsyncClient, auth: dict[str, str], content_type: str
) -> None:
    response = await client.post(
        "/v1/evaluations",
        content=json.dumps(interview()).encode(),
        headers={**auth, "Content-Type": content_type},
    )

    assert _fields(_problem(response, 422)) == ["body"]


async def test_fields_are_named_by_their_path_in_the_body(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = interview(candidate={"name": "Jane", "email": "nope"}, transcript=[{"question": "q"}])

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert sorted(_fields(_problem(response, 422))) == ["candidate.email", "transcript.0.answer"]


async def test_the_key_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/evaluations", content=b"not json", headers={"Content-Type": "application/json"}
    )

    _problem(response, 401)


async def test_a_key_without_write_scope_is_a_403(
    client: httpx.AsyncClient, make_key: KeyMaker
) -> None:
    reader = await make_key("read")

    response = await client.post("/v1/evaluations", json=interview(), headers=reader)

    _problem(response, 403)


async def test_an_idempotency_key_out_of_its_rules_is_a_422_naming_the_header(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/evaluations", json=interview(), headers={**auth, "Idempotency-Key": "x" * 256}
    )

    assert _fields(_problem(response, 422)) == ["header.Idempotency-Key"]
