"""Checked evidence, anchored prompts, consistency and provenance, as the API shows them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from service.llm.prompts import PROMPT_VERSION
from tests.conftest import ANALYZER_URL, LLM_BASE_URL, KeyMaker, analysis, completion, interview

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
REAL = "For CPU-bound work the event loop gives nothing"
INVENTED = "I have twenty years of Rust experience"


def content(criteria: dict[str, tuple[int | None, list[str]]]) -> dict[str, Any]:
    """A scoring answer with, per criterion, a score (None abstains) and its quotes."""
    return {
        "criteria": {
            key: {
                "reasoning": f"reasoning for {key}",
                "evidence": [{"quote": q} for q in quotes],
                "insufficient_evidence": score is None,
                "score": score,
            }
            for key, (score, quotes) in criteria.items()
        },
        "summary": "summary",
    }


async def test_each_quote_is_checked_and_a_criterion_without_real_evidence_is_flagged(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    answer = content(
        {
            # Case, punctuation and spacing differ from the transcript: still verified.
            "technical_depth": (
                4,
                ["for cpu-bound   WORK, the event loop gives nothing", INVENTED],
            ),
            "communication": (3, [INVENTED, "nothing"]),
        }
    )
    upstream.post(CHAT).mock(return_value=completion(answer))
    upstream.post(ANALYZE).mock(return_value=analysis())

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    depth, communication = body["criteria"]
    assert [e["verified"] for e in depth["evidence"]] == [True, False]
    assert depth["evidence_unverified"] is False
    # A one-word quote proves nothing, so it is not verified either.
    assert [e["verified"] for e in communication["evidence"]] == [False, False]
    assert communication["evidence_unverified"] is True
    assert body["needs_review"] is True


async def test_abstaining_criteria_are_not_flagged_as_unverified_and_renormalise_weights(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    answer = content({"technical_depth": (None, []), "communication": (2, [REAL])})
    upstream.post(CHAT).mock(return_value=completion(answer))
    upstream.post(ANALYZE).mock(return_value=httpx.Response(503))

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    depth = body["criteria"][0]
    assert (depth["score"], depth["insufficient_evidence"]) == (None, True)
    assert depth["evidence_unverified"] is False
    # communication alone carries the whole weight: a 2 is 25.
    assert body["overall_score"] == 25.0
    assert body["needs_review"] is False


async def test_every_criterion_abstaining_gives_no_score_and_no_guess(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    answer = content({"technical_depth": (None, []), "communication": (None, [])})
    upstream.post(CHAT).mock(return_value=completion(answer))
    upstream.post(ANALYZE).mock(return_value=analysis(90))

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    assert body["overall_score"] is None
    assert body["recommendation"] == "insufficient_evidence"


@pytest.mark.parametrize("settings_overrides", [{"scoring_samples": 3, "review_spread": 1}])
async def test_samples_that_agree_within_the_spread_setting_need_no_review(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(
        side_effect=[
            completion(content({"technical_depth": (s, [REAL]), "communication": (3, [REAL])}))
            for s in (4, 3, 4)
        ]
    )
    upstream.post(ANALYZE).mock(return_value=analysis())

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    assert (body["criteria"][0]["score"], body["criteria"][0]["spread"]) == (4, 1)
    assert body["needs_review"] is False


async def test_the_prompt_carries_anchors_per_criterion(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    llm = upstream.post(CHAT).mock(
        return_value=completion(
            content({"technical_depth": (3, [REAL]), "communication": (3, [REAL])})
        )
    )
    upstream.post(ANALYZE).mock(return_value=analysis())
    body = interview()
    body["rubric"]["criteria"][0]["anchors"] = {
        "1": "Thinks asyncio speeds up CPU-bound code",
        "3": "Knows async is for I/O-bound work",
        "5": "Explains the event loop, executors and backpressure",
    }

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 201
    sent = json.loads(llm.calls.last.request.content)
    system, user = sent["messages"][0]["content"], sent["messages"][1]["content"]
    assert "1 = no relevant knowledge" in system
    assert "- technical_depth (weight 2): Understands async I/O\n" in user
    assert "    1 = Thinks asyncio speeds up CPU-bound code\n" in user
    assert "    5 = Explains the event loop, executors and backpressure" in user
    # Field order of the schema: reasoning first, the score last.
    criterion = sent["response_format"]["json_schema"]["schema"]["properties"]["criteria"]
    fields = list(criterion["properties"]["technical_depth"]["properties"])
    assert fields[0] == "reasoning"
    assert fields[-1] == "score"


async def test_the_default_rubric_has_anchors_for_every_criterion(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    keys = ("technical_depth", "problem_solving", "communication")
    llm = upstream.post(CHAT).mock(return_value=completion(content({k: (3, [REAL]) for k in keys})))
    upstream.post(ANALYZE).mock(return_value=analysis())

    await client.post("/v1/evaluations", json=interview(rubric=None), headers=auth)

    user = json.loads(llm.calls.last.request.content)["messages"][1]["content"]
    assert user.count("    1 = ") == user.count("    3 = ") == user.count("    5 = ") == 3


async def test_anchors_only_for_1_3_and_5(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    body = interview()
    body["rubric"]["criteria"][0]["anchors"] = {"2": "between"}

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("rubric.criteria.0.anchors")


async def test_provenance_records_every_attempt_and_is_shown_on_request(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    good = content({"technical_depth": (4, [REAL]), "communication": (3, [REAL])})
    upstream.post(CHAT).mock(
        side_effect=[
            httpx.Response(503, json={"error": {"message": "busy"}}),
            completion("not json", prompt_tokens=90, completion_tokens=5),
            completion(good, prompt_tokens=120, completion_tokens=60),
        ]
    )
    upstream.post(ANALYZE).mock(return_value=analysis())
    created = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    plain = await client.get(f"/v1/evaluations/{created['id']}", headers=auth)
    full = await client.get(f"/v1/evaluations/{created['id']}?include=provenance", headers=auth)

    assert plain.json()["provenance"] is None
    assert full.status_code == 200
    provenance = full.json()["provenance"]
    assert provenance["prompt_version"] == PROMPT_VERSION
    assert len(provenance["rubric_hash"]) == 64
    assert provenance["model"] == "gpt-test"
    assert (provenance["seed"], provenance["temperature"]) == (0, 0)
    assert provenance["system_fingerprints"] == ["fp_test"]
    [attempts] = provenance["samples"]
    assert [a["error"] for a in attempts] == ["InternalServerError", None, None]
    assert attempts[1]["raw_output"] == "not json"
    assert attempts[1]["validation_error"]
    assert json.loads(attempts[2]["raw_output"]) == good
    assert [a["prompt_tokens"] for a in attempts] == [0, 90, 120]
    assert attempts[2]["seed"] == 0
    assert attempts[2]["system_fingerprint"] == "fp_test"
    assert created["usage"] == {"prompt_tokens": 210, "completion_tokens": 65}


async def test_provenance_needs_the_read_scope(
    client: httpx.AsyncClient, make_key: KeyMaker, upstream: respx.MockRouter
) -> None:
    writer = await make_key("write")
    upstream.post(CHAT).mock(
        return_value=completion(
            content({"technical_depth": (4, [REAL]), "communication": (3, [REAL])})
        )
    )
    upstream.post(ANALYZE).mock(return_value=analysis())
    created = (await client.post("/v1/evaluations", json=interview(), headers=writer)).json()

    response = await client.get(
        f"/v1/evaluations/{created['id']}?include=provenance", headers=writer
    )

    assert response.status_code == 403


async def test_openapi_documents_provenance_and_the_include_parameter(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()

    params = spec["paths"]["/v1/evaluations/{evaluation_id}"]["get"]["parameters"]
    assert "include" in [p["name"] for p in params]
    assert "ProvenanceRead" in spec["components"]["schemas"]
    assert "AttemptRead" in spec["components"]["schemas"]


@pytest.mark.parametrize("settings_overrides", [{"scoring_samples": 3}])
async def test_samples_split_on_abstaining_need_review(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(
        side_effect=[
            completion(
                content({"technical_depth": (s, [REAL] if s else []), "communication": (3, [REAL])})
            )
            for s in (4, None, 4)
        ]
    )
    upstream.post(ANALYZE).mock(return_value=analysis())

    body = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()

    assert (body["criteria"][0]["score"], body["criteria"][0]["spread"]) == (4, 0)
    assert body["needs_review"] is True
