"""The upstream half of an evaluation: the LLM and the analyzer, called concurrently."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from pydantic import BaseModel

from service.config import Settings
from service.errors import ServiceError, TranscriptUnscorable
from service.evaluations.canonical import Interview
from service.evaluations.quality import assess
from service.evaluations.schemas import (
    CriterionResult,
    EvaluationCreate,
    Evidence,
    PortfolioResult,
    Usage,
)
from service.evaluations.scoring import median_and_spread, normalise, quote_verified
from service.llm.client import SEED, TEMPERATURE, LLMClient, LLMOutput
from service.llm.prompts import PROMPT_VERSION, build_messages
from service.portfolio.client import PortfolioAnalyzer


class ScoringResult(BaseModel):
    """What the upstreams said of one interview: everything that a cache may keep."""

    criteria: list[CriterionResult]
    summary: str
    portfolio: PortfolioResult | None
    usage: Usage
    timings_ms: dict[str, int]
    model: str
    prompt_version: str
    rubric_hash: str
    needs_review: bool
    provenance: dict[str, Any]
    # Set when served from the cache or from an identical request's upstream calls.
    cached: bool = False


def check_transcript(payload: EvaluationCreate) -> None:
    """Raise TranscriptUnscorable (422) when the transcript is too short or garbled to score."""
    verdict = assess([turn.answer for turn in payload.transcript])
    if verdict is not None:
        raise TranscriptUnscorable(verdict.detail, rule=verdict.rule)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class Scores(Protocol):
    """What scores an interview: the Scorer itself, or the cache in front of it."""

    async def score(self, interview: Interview) -> ScoringResult:
        """The scoring result of `interview`."""
        ...


class Scorer:
    """Scores one interview; holds no database connection and keeps no state per request."""

    def __init__(self, *, settings: Settings, llm: LLMClient, analyzer: PortfolioAnalyzer) -> None:
        self._settings = settings
        self._llm = llm
        self._analyzer = analyzer

    async def score(self, interview: Interview) -> ScoringResult:
        """The LLM's samples and the analysis, concurrently; an LLM error stops both."""
        payload = interview.payload
        check_transcript(payload)
        started = time.perf_counter()
        deadline = time.monotonic() + self._settings.scoring_deadline_s
        position = interview.data["position"]
        keys = [c["key"] for c in interview.criteria]
        messages = build_messages(
            position_title=position["title"],
            position_level=position["level"],
            position_description=position["description"],
            criteria=interview.criteria,
            transcript=interview.data["transcript"],
            portfolio_url=interview.portfolio_url,
        )
        timings: dict[str, int] = {}

        async def llm_sample() -> LLMOutput:
            output = await self._llm.score(
                messages=messages, criterion_keys=keys, deadline=deadline
            )
            timings["llm"] = max(timings.get("llm", 0), _ms(time.perf_counter() - started))
            return output

        async def analysis() -> PortfolioResult:
            assert payload.portfolio is not None
            result = await self._analyzer.analyze(
                url=str(payload.portfolio.url), position_title=payload.position.title
            )
            timings["portfolio"] = _ms(time.perf_counter() - started)
            return result

        try:
            async with asyncio.TaskGroup() as group:
                samples = [
                    group.create_task(llm_sample()) for _ in range(self._settings.scoring_samples)
                ]
                portfolio_task = group.create_task(analysis()) if payload.portfolio else None
        except* ServiceError as errors:
            # The first error, unwrapped, so that the error handlers render it.
            raise errors.exceptions[0] from None
        timings["total"] = _ms(time.perf_counter() - started)
        outputs = [task.result() for task in samples]
        return self._combine(
            interview,
            outputs=outputs,
            portfolio=portfolio_task.result() if portfolio_task else None,
            timings=timings,
        )

    def _combine(
        self,
        interview: Interview,
        *,
        outputs: list[LLMOutput],
        portfolio: PortfolioResult | None,
        timings: dict[str, int],
    ) -> ScoringResult:
        payload = interview.payload
        answers = [normalise(turn.answer) for turn in payload.transcript]
        results: list[CriterionResult] = []
        needs_review = False
        for criterion in payload.effective_rubric.criteria:
            per_sample = [output.criteria[criterion.key] for output in outputs]
            score, spread = median_and_spread([c.score for c in per_sample])
            # The first sample that agrees with the median explains it.
            chosen = next(
                (c for c in per_sample if c.score is not None and c.score == score),
                per_sample[0],
            )
            evidence = [
                Evidence(quote=e.quote, verified=quote_verified(e.quote, answers))
                for e in chosen.evidence
            ]
            unverified = score is not None and (
                not evidence or not any(e.verified for e in evidence)
            )
            # Samples that disagree on whether there is evidence at all are uncertain too,
            # whatever the spread of those that scored.
            split = len({c.score is None for c in per_sample}) > 1
            if spread > self._settings.review_spread or unverified or split:
                needs_review = True
            results.append(
                CriterionResult(
                    key=criterion.key,
                    score=score,
                    weight=criterion.weight,
                    rationale=chosen.reasoning,
                    evidence=evidence,
                    insufficient_evidence=score is None,
                    evidence_unverified=unverified,
                    spread=spread,
                )
            )
        fingerprints = sorted(
            {str(a.get("system_fingerprint")) for o in outputs for a in o.attempts if "model" in a}
        )
        return ScoringResult(
            criteria=results,
            summary=outputs[0].summary,
            portfolio=portfolio,
            usage=Usage(
                prompt_tokens=sum(o.prompt_tokens for o in outputs),
                completion_tokens=sum(o.completion_tokens for o in outputs),
            ),
            timings_ms=timings,
            model=self._settings.reported_model,
            prompt_version=PROMPT_VERSION,
            rubric_hash=interview.rubric_hash,
            needs_review=needs_review,
            provenance={
                "model": self._settings.llm_model,
                "seed": SEED,
                "temperature": TEMPERATURE,
                "system_fingerprints": fingerprints,
                # json_object: some answer was asked for in JSON mode, the schema in the prompt.
                "response_format": (
                    "json_object"
                    if any(o.response_format == "json_object" for o in outputs)
                    else "json_schema"
                ),
                "samples": [o.attempts for o in outputs],
            },
        )
