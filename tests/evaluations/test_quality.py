"""The transcript-quality gate: its rules alone, and the 422 it gives before any LLM call."""

from __future__ import annotations

import httpx
import pytest
import respx

from service.evaluations.quality import assess
from tests.conftest import ANALYZER_URL, LLM_BASE_URL, interview

GOOD = "For CPU-bound work the event loop gives nothing; I would use processes."


@pytest.mark.parametrize(
    "answers",
    [
        [GOOD],
        [GOOD, "I would profile first, then move the hot loop to a process pool."],
        # One unanswered question out of two is still scorable.
        [GOOD, ""],
        ["비동기 I/O는 대기 시간이 긴 네트워크 작업에 적합하고 CPU 작업에는 프로세스를 씁니다."],
        [f"{GOOD} [inaudible] and then I would measure it again."],
    ],
)
def test_scorable_transcripts_pass(answers: list[str]) -> None:
    assert assess(answers) is None


@pytest.mark.parametrize(
    ("answers", "rule"),
    [
        ([""], "too_short"),
        (["Yes."], "too_short"),
        (["um, uh... pass", "no idea", "I don't know"], "too_short"),
        ([GOOD, "", "um", "n/a"], "unanswered"),
        ([GOOD, "...", ""], "unanswered"),
        (["#$%^ &*() 1234 5678 !!! ??? ;;; :::", "@@@ ### $$$"], "garbled"),
        (["[inaudible] so [crosstalk] [inaudible] the [inaudible] yes [inaudible]"], "garbled"),
        (["the " * 30], "garbled"),
    ],
)
def test_unscorable_transcripts_are_rejected_by_rule(answers: list[str], rule: str) -> None:
    verdict = assess(answers)
    assert verdict is not None
    assert verdict.rule == rule
    assert verdict.detail


async def test_unscorable_transcript_gets_a_422_before_any_llm_call(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    llm = upstream.post(f"{LLM_BASE_URL}/chat/completions")
    analyzer = upstream.post(f"{ANALYZER_URL}/analyze")
    body = interview(
        transcript=[
            {"question": "When would you not use asyncio?", "answer": "um"},
            {"question": "How do you test async code?", "answer": ""},
            {"question": "What is backpressure?", "answer": "pass"},
        ]
    )

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/transcript-unscorable")
    assert "meaningful words" in problem["detail"]
    assert problem["errors"] == [
        {"field": "transcript", "message": problem["detail"], "type": "too_short"}
    ]
    assert not llm.called
    assert not analyzer.called
    listed = await client.get("/v1/evaluations", headers=auth)
    assert listed.json()["items"] == []


def test_a_long_natural_answer_is_not_taken_for_a_loop() -> None:
    sentences = [
        "I would start from the symptoms and the metrics we already have.",
        "Then I would look at the slow query log and the plans of the worst queries.",
        "If the plan changed, stale statistics are the usual cause, so I would analyze the table.",
        "If it did not, I would look at locks, connection counts and the cache hit ratio.",
        "Only after measuring would I add an index, because every index slows the writes.",
    ]
    # Long, with common words recurring, yet not a loop.
    assert assess([" ".join(sentences)]) is None
