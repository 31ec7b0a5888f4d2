"""Logs are JSON lines with a request id, route, status and duration, and never carry what
the candidate said, who they are, or a key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from service.logs import QUIET_LOGGERS, JsonFormatter, configure_logging
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    completion,
    interview,
    scores_content,
)

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
MARKER = "ZQXJ-marker-7731"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the service logs at its most verbose (debug), configured as `serve` configures it."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    configure_logging(level="debug", fmt="json")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    assert isinstance(handler.formatter, JsonFormatter)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def marked_interview() -> dict[str, Any]:
    return interview(
        candidate={
            "name": f"Jane {MARKER}",
            "email": f"{MARKER.lower()}@example.com",
            "external_id": MARKER,
        },
        position={"title": "Backend Engineer", "level": "senior", "description": MARKER},
        transcript=[
            {
                "question": f"When would you not use asyncio? {MARKER}",
                "answer": f"For CPU-bound work the event loop gives nothing. {MARKER}",
            }
        ],
        portfolio={"url": f"https://github.com/{MARKER}"},
    )


async def test_scoring_logs_no_content_and_no_key(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    captured: io.StringIO,
) -> None:
    upstream.post(CHAT).mock(
        side_effect=[
            completion(f"not json {MARKER}"),
            completion(scores_content({"technical_depth": 4, "communication": 3})),
        ]
    )
    upstream.post(ANALYZE).mock(return_value=httpx.Response(500, text=MARKER))

    created = await client.post("/v1/evaluations", json=marked_interview(), headers=auth)
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]
    listed = await client.get(
        "/v1/evaluations", params={"candidate_email": f"{MARKER.lower()}@example.com"}, headers=auth
    )
    assert listed.status_code == 200
    assert (await client.get(f"/v1/evaluations/{evaluation_id}", headers=auth)).status_code == 200
    rejected = await client.post(
        "/v1/evaluations", json={**marked_interview(), "transcript": MARKER}, headers=auth
    )
    assert rejected.status_code == 422
    assert (
        await client.delete(f"/v1/evaluations/{evaluation_id}", headers=auth)
    ).status_code == 204

    text = captured.getvalue()
    assert text, "the requests were logged"
    assert MARKER not in text
    assert MARKER.lower() not in text
    key = auth["Authorization"].removeprefix("Bearer ")
    assert key not in text
    assert key[:12] not in text


async def test_one_access_line_per_request_with_request_id(
    client: httpx.AsyncClient, auth: dict[str, str], captured: io.StringIO
) -> None:
    given = await client.get("/v1/evaluations", headers={**auth, "X-Request-ID": "req-abc.123"})
    made = await client.get("/v1/evaluations/unknown", headers=auth)

    assert given.headers["x-request-id"] == "req-abc.123"
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    access = [line for line in lines(captured) if line["logger"] == "service.access"]
    assert [(a["request_id"], a["method"], a["route"], a["status"]) for a in access] == [
        ("req-abc.123", "GET", "/v1/evaluations", 200),
        (made_id, "GET", "/v1/evaluations/{evaluation_id}", 404),
    ]
    assert all(a["level"] == "info" and a["duration_ms"] >= 0 for a in access)


async def test_a_forged_request_id_is_replaced(
    client: httpx.AsyncClient, captured: io.StringIO
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": 'x" forged\\n{"level"'})
    assert response.headers["x-request-id"] != 'x" forged\\n{"level"'
    assert len(response.headers["x-request-id"]) == 32


async def test_lines_logged_while_serving_carry_the_request_id(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    captured: io.StringIO,
) -> None:
    upstream.post(CHAT).mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(ANALYZE).mock(return_value=httpx.Response(503))

    response = await client.post(
        "/v1/evaluations", json=interview(), headers={**auth, "X-Request-ID": "trace-42"}
    )

    assert response.status_code == 201
    warnings = [line for line in lines(captured) if line["logger"] == "service.portfolio.client"]
    assert warnings
    assert all(line["request_id"] == "trace-42" for line in warnings)
