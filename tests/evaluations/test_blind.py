"""Blind scoring on every path that prompts the LLM: no candidate name, email or external id
reaches the LLM or the analyzer, whether the interview is scored at once, in the background,
in a batch, several times over (samples) or again after an invalid answer (the repair)."""

from __future__ import annotations

import json
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
    settle,
)

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))
# Distinctive, so that any piece of them in a prompt is found.
CANDIDATE = {
    "name": "Zelda Quixotic",
    "email": "zq-7731@quixmail.example",
    "external_id": "ATS-99881",
}
PIECES = ("zelda", "quixotic", "zq-7731", "quixmail", "ats-99881")


def blind(body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An interview by the distinctive candidate."""
    return interview(candidate=CANDIDATE, **(body or {}))


def assert_blind(router: respx.MockRouter, *, llm_calls: int) -> list[dict[str, Any]]:
    """Every upstream request is free of the candidate's identity; the LLM requests' bodies."""
    sent = [call.request for call in router.calls]
    assert sent, "no upstream was called"
    for request in sent:
        text = request.content.decode().lower()
        for piece in PIECES:
            assert piece not in text, (request.url, piece)
    llm = [json.loads(r.content) for r in sent if str(r.url) == CHAT]
    assert len(llm) == llm_calls
    assert any(str(r.url) == ANALYZE for r in sent)
    return llm


async def test_an_asynchronous_evaluation_is_scored_blind(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    upstream.post(ANALYZE).mock(return_value=analysis())

    response = await client.post(
        "/v1/evaluations", json=blind(), headers={**auth, "Prefer": "respond-async"}
    )
    await settle(app)

    assert response.status_code == 202
    done = (await client.get(response.headers["location"], headers=auth)).json()
    assert (done["status"], done["candidate"]["name"]) == ("completed", "Zelda Quixotic")
    assert_blind(upstream, llm_calls=1)


async def test_a_batch_is_scored_blind(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    upstream.post(ANALYZE).mock(return_value=analysis())
    items = [blind(), blind({"position": {"title": "Data Engineer", "level": "mid"}})]

    response = await client.post("/v1/evaluation-batches", json={"items": items}, headers=auth)
    await settle(app)

    assert response.status_code == 202
    batch = (await client.get(response.headers["location"], headers=auth)).json()
    assert batch["counts"]["completed"] == 2
    assert_blind(upstream, llm_calls=2)


@pytest.mark.parametrize("settings_overrides", [{"scoring_samples": 3}])
async def test_every_sample_is_scored_blind(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    upstream.post(ANALYZE).mock(return_value=analysis())

    response = await client.post("/v1/evaluations", json=blind(), headers=auth)

    assert response.status_code == 201, response.text
    assert_blind(upstream, llm_calls=3)


async def test_the_repair_prompt_is_blind(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    missing_criterion = {"criteria": {"technical_depth": {}}, "summary": "x"}
    upstream.post(CHAT).mock(side_effect=[completion(missing_criterion), GOOD])
    upstream.post(ANALYZE).mock(return_value=analysis())

    response = await client.post("/v1/evaluations", json=blind(), headers=auth)

    assert response.status_code == 201, response.text
    first, repair = assert_blind(upstream, llm_calls=2)
    # The repair is the first prompt with the invalid answer and the validation error after it.
    assert repair["messages"][: len(first["messages"])] == first["messages"]
    assert "criteria.communication" in repair["messages"][-1]["content"]
