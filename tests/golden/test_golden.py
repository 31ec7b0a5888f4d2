"""The golden interviews through the whole scoring path, with the LLM mocked.

The mocked answers are written by hand to sit inside the expected ranges: what is tested is the
plumbing (the gate, abstention, the evidence check, injection text kept as data, the agreement
check of `make eval`), not a model.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from tests.conftest import LLM_BASE_URL, completion
from tests.golden.run_eval import check_case, load_cases, report, request_body

CASES = load_cases()
CHAT = f"{LLM_BASE_URL}/chat/completions"


def test_the_golden_set_covers_the_cases_that_matter() -> None:
    names = {c["name"] for c in CASES}
    assert len(CASES) >= 12
    assert {"strong_backend", "weak_backend", "off_topic", "empty_answers"} <= names
    assert {"injection_attempt", "garbled_transcript", "uncovered_criterion"} <= names


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_golden_case_through_the_scoring_path(
    case: dict[str, Any],
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
) -> None:
    llm = upstream.post(CHAT).mock(return_value=completion(case.get("mock", {})))

    response = await client.post("/v1/evaluations", json=request_body(case), headers=auth)
    body = response.json()

    outcome = check_case(case, response.status_code, body)
    assert outcome.agrees, outcome.mismatches
    if case["expected"]["outcome"] == "rejected":
        assert not llm.called
        return
    assert llm.call_count == 1
    mock = case["mock"]["criteria"]
    invented = set(case.get("mock_invented_quotes", []))
    for criterion in body["criteria"]:
        said = mock[criterion["key"]]
        assert criterion["score"] == said["score"]
        assert criterion["insufficient_evidence"] is (said["score"] is None)
        assert [(e["quote"], e["verified"]) for e in criterion["evidence"]] == [
            (e["quote"], e["quote"] not in invented) for e in said["evidence"]
        ]
    assert body["needs_review"] is bool(invented)
    if "injection_marker" in case:
        messages = json.loads(llm.calls.last.request.content)["messages"]
        assert case["injection_marker"] not in messages[0]["content"]
        user = messages[1]["content"]
        data = user.split("<transcript_json>\n", 1)[1].split("\n</transcript_json>", 1)[0]
        assert case["injection_marker"] in data
        # The closing tag the candidate typed stays inside the data block, escaped.
        assert user.count("</transcript_json>") == 1


def test_the_report_counts_agreement() -> None:
    case = next(c for c in CASES if c["name"] == "strong_backend")
    good = {
        "overall_score": 90.0,
        "recommendation": "strong_hire",
        "criteria": [
            {"key": "technical_depth", "score": 5},
            {"key": "problem_solving", "score": 4},
            {"key": "communication", "score": 4},
        ],
    }
    bad = {**good, "overall_score": 40.0, "criteria": [{"key": "technical_depth", "score": 2}]}

    text = report([check_case(case, 201, good), check_case(case, 201, bad)])

    assert "cases agreeing: 1/2 (50%)" in text
    assert "criteria within range: 3/6 (50%)" in text
    assert "overall: 40.0 outside [70, 100]" in text
