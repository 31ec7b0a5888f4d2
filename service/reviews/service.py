"""Recording a review: the adjusted scores validated, the overall score recomputed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.config import Settings
from service.errors import Conflict, NotFound, UnprocessableRequest
from service.evaluations import repository
from service.evaluations.schemas import EvaluationRead
from service.evaluations.scoring import interview_score, overall_score, recommendation
from service.evaluations.service import thresholds, to_read
from service.reviews.models import EvaluationReview
from service.reviews.schemas import ReviewCreate


def reviewed_scores(
    result: dict[str, Any], reviews: list[EvaluationReview], payload: ReviewCreate
) -> dict[str, float | None]:
    """The criterion scores after the earlier reviews' adjustments and this one's, in order."""
    scores: dict[str, float | None] = {c["key"]: c["score"] for c in result.get("criteria", [])}
    for earlier in reviews:
        scores.update(earlier.criterion_scores)
    scores.update(payload.criterion_scores)
    return scores


async def create_review(
    session: AsyncSession,
    *,
    evaluation_id: str,
    payload: ReviewCreate,
    api_key: ApiKey,
    settings: Settings,
) -> EvaluationRead:
    """Record a review; the evaluation then shows its score, the model's kept beside it."""
    evaluation = await repository.get_evaluation(session, evaluation_id, tenant=api_key.tenant)
    if evaluation is None:
        raise NotFound(f"No evaluation {evaluation_id}.")
    if evaluation.status != "completed" or evaluation.result is None:
        raise Conflict(
            f"Only a completed evaluation can be reviewed; this one is {evaluation.status}."
        )
    criteria = evaluation.result.get("criteria", [])
    keys = [c["key"] for c in criteria]
    unknown = sorted(set(payload.criterion_scores) - set(keys))
    if unknown:
        raise UnprocessableRequest(
            f"criterion_scores names criteria this evaluation does not have: "
            f"{', '.join(unknown)} (its criteria: {', '.join(keys)})."
        )
    scores = reviewed_scores(evaluation.result, list(evaluation.reviews), payload)
    interview = interview_score((scores[c["key"]], c["weight"]) for c in criteria)
    portfolio = evaluation.result.get("portfolio") or {}
    portfolio_score = portfolio.get("score") if portfolio.get("status") == "ok" else None
    overall = overall_score(interview, portfolio_score, portfolio_weight=settings.portfolio_weight)
    evaluation.reviews.append(
        EvaluationReview(
            api_key_id=api_key.id,
            decision=payload.decision,
            criterion_scores=payload.criterion_scores,
            reason=payload.reason,
            overall_score=overall,
            recommendation=payload.decision or recommendation(overall, thresholds(settings)),
        )
    )
    await session.flush()
    return to_read(evaluation)
