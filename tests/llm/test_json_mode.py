"""A server that answers 400 to `response_format: json_schema`: JSON mode with the schema in the
prompt, once per process, shown in provenance and /readyz."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx
from fastapi import FastAPI

from service.llm.prompts import response_schema
from tests.conftest import interview
from tests.llm.helpers import CHAT, assert_problem, chat, provenance, scores
from tests.test_health import UNDER_SCHEMA

UNSUPPORTED = httpx.Response(
    400,
    json={
        "error": {
            "message": "This response_format type is unavailable now",
            "type": "invalid_request_error",
            "param": "response_format",
            "code": None,
        }
    },
)
KEYS = ["technical_depth", "communication"]


def sent(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


async def test_a_server_without_json_schema_is_asked_in_json_mode_from_then_on(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return UNSUPPORTED if body["response_format"]["type"] == "json_schema" else chat()

    route = upstream.post(CHAT).mock(side_effect=server)

    first = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert first.status_code == 201, first.text
    assert scores(first.json()) == {"technical_depth": 4, "communication": 3}
    refused, answered = sent(route)
    assert refused["response_format"]["type"] == "json_schema"
    assert answered["response_format"] == {"type": "json_object"}
    schema = json.dumps(response_schema(KEYS), separators=(",", ":"))
    assert schema in answered["messages"][0]["content"]
    assert answered["messages"][1:] == refused["messages"][1:]
    stored = await provenance(client, auth, first.json()["id"])
    assert stored["response_format"] == "json_object"
    [[failed, attempt]] = stored["samples"]
    assert (failed["error"], failed["response_format"]) == ("BadRequestError", "json_schema")
    assert attempt["response_format"] == "json_object"
    ready = (await client.get("/readyz")).json()
    assert ready["llm"] == {
        "response_format": "json_object",
        "fallback_reason": "the server answered status 400 to json_schema",
    }

    # Remembered: the next scoring goes straight to JSON mode.
    other = interview(position={"title": "Data Engineer"})
    second = await client.post("/v1/evaluations", json=other, headers=auth)

    assert second.status_code == 201, second.text
    assert [body["response_format"]["type"] for body in sent(route)[2:]] == ["json_object"]


async def test_a_server_refusing_json_mode_too_rejects_the_request_and_nothing_changes(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    route = upstream.post(CHAT).mock(return_value=UNSUPPORTED)

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    body = assert_problem(response, 502, "llm-rejected")
    assert "400" in body["detail"]
    assert [b["response_format"]["type"] for b in sent(route)] == ["json_schema", "json_object"]
    assert (await client.get("/readyz")).json()["llm"] == UNDER_SCHEMA


async def test_a_400_for_another_reason_is_not_asked_again(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    route = upstream.post(CHAT).mock(
        return_value=httpx.Response(400, json={"error": {"message": "The model does not exist"}})
    )

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert_problem(response, 502, "llm-rejected")
    assert route.call_count == 1
    assert (await client.get("/readyz")).json()["llm"] == UNDER_SCHEMA


async def test_a_422_to_json_schema_falls_back_too(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    route = upstream.post(CHAT).mock(
        side_effect=[
            httpx.Response(
                422,
                json={"detail": [{"loc": ["body", "response_format", "type"], "msg": "bad"}]},
            ),
            chat(),
        ]
    )

    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert response.status_code == 201, response.text
    assert [b["response_format"]["type"] for b in sent(route)] == ["json_schema", "json_object"]
