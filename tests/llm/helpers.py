"""Chat completions as real servers send them, and reading what an evaluation stored."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import LLM_BASE_URL, scores_content

CHAT = f"{LLM_BASE_URL}/chat/completions"
SCORES = scores_content({"technical_depth": 4, "communication": 3})
USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}


def chat(
    content: Any = SCORES,
    *,
    message: dict[str, Any] | None = None,
    finish_reason: str | None = "stop",
    usage: Any = USAGE,
    **top: Any,
) -> httpx.Response:
    """A 200 chat completion: `content` (JSON-encoded unless a string) in the message, or the
    `message` given; `usage=None` leaves usage out; `top` adds or replaces top-level fields."""
    if message is None:
        text = content if isinstance(content, str) or content is None else json.dumps(content)
        message = {"role": "assistant", "content": text}
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test-2026",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    body.update(top)
    # Encoded as servers do, \u-escaping what is not ASCII (httpx's json= cannot encode a lone
    # surrogate).
    return httpx.Response(
        200, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is a problem of this status and type; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(slug)
    assert body["title"]
    assert body["detail"]
    return body


async def provenance(client: httpx.AsyncClient, auth: dict[str, str], evaluation_id: str) -> Any:
    """The stored provenance of an evaluation, as the API shows it."""
    response = await client.get(f"/v1/evaluations/{evaluation_id}?include=provenance", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["provenance"]


def scores(body: dict[str, Any]) -> dict[str, Any]:
    """Each criterion's score in an evaluation."""
    return {c["key"]: c["score"] for c in body["criteria"]}
