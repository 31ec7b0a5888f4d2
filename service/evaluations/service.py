"""The business rules of evaluations: scoring, storing, reading and erasing."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.config import Settings
from service.database import new_id, utcnow
from service.errors import NotFound
from service.evaluations import repository
from service.evaluations.models import Evaluation
from service.evaluations.schemas import (
    Candidate,
    EvaluationCreate,
    EvaluationPage,
    EvaluationRead,
    NotificationRead,
    PositionRead,
    ProvenanceRead,
)
from service.evaluations.scorer import Scorer, ScoringResult
from service.evaluations.scoring import (
    Thresholds,
    interview_score,
    overall_score,
    recommendation,
)
from service.notifications import outbox
from service.notifications.follow_ups import enqueue_follow_ups
from service.reviews.views import review_fields


def thresholds(settings: Settings) -> Thresholds:
    """The recommendation thresholds from the settings."""
    return Thresholds(
        strong_hire=settings.threshold_strong_hire,
        hire=settings.threshold_hire,
        no_hire=settings.threshold_no_hire,
    )


def apply_result(evaluation: Evaluation, result: ScoringResult, *, settings: Settings) -> None:
    """Fill a pending evaluation with a scoring result and the scores derived from it."""
    interview = interview_score((c.score, c.weight) for c in result.criteria)
    portfolio = result.portfolio
    portfolio_score = portfolio.score if portfolio and portfolio.status == "ok" else None
    overall = overall_score(interview, portfolio_score, portfolio_weight=settings.portfolio_weight)
    evaluation.status = "completed"
    evaluation.overall_score = overall
    evaluation.recommendation = recommendation(overall, thresholds(settings))
    evaluation.partial = portfolio is not None and portfolio.status in ("unavailable", "rejected")
    evaluation.needs_review = result.needs_review
    evaluation.cached = result.cached
    evaluation.model = result.model
    evaluation.prompt_version = result.prompt_version
    evaluation.rubric_hash = result.rubric_hash
    evaluation.provenance = result.provenance
    evaluation.result = result.model_dump(
        mode="json", include={"criteria", "summary", "portfolio", "usage", "timings_ms"}
    )
    evaluation.completed_at = utcnow()


def new_evaluation(payload: EvaluationCreate, *, api_key: ApiKey) -> Evaluation:
    """A pending evaluation of `payload`, not yet added to a session."""
    return Evaluation(
        # Set here rather than at flush: the follow-up emails link to it before the flush.
        id=new_id(),
        status="pending",
        api_key_id=api_key.id,
        candidate_name=payload.candidate.name,
        candidate_email=payload.candidate.email.lower(),
        candidate_external_id=payload.candidate.external_id,
        position_title=payload.position.title,
        position_level=payload.position.level,
        request=payload.model_dump(mode="json"),
        created_at=utcnow(),
        # Known empty, so that reading it never needs a query (there is none to await).
        outbox_messages=[],
    )


async def create_evaluation(
    session: AsyncSession,
    *,
    payload: EvaluationCreate,
    api_key: ApiKey,
    scorer: Scorer,
    settings: Settings,
) -> EvaluationRead:
    """Score an interview and store the evaluation; an upstream error stores nothing."""
    # The session is untouched until the upstreams have answered: no connection is held
    # while they are awaited.
    result = await scorer.score(payload)
    evaluation = new_evaluation(payload, api_key=api_key)
    apply_result(evaluation, result, settings=settings)
    session.add(evaluation)
    # In the same transaction as the evaluation: both are stored, or neither.
    enqueue_follow_ups(evaluation, payload=payload, settings=settings)
    await session.flush()
    return to_read(evaluation)


async def read_evaluation(
    session: AsyncSession, *, evaluation_id: str, include_provenance: bool = False
) -> EvaluationRead:
    """One evaluation, or 404; with its provenance when asked."""
    evaluation = await repository.get_evaluation(session, evaluation_id)
    if evaluation is None:
        raise NotFound(f"No evaluation {evaluation_id}.")
    read = to_read(evaluation)
    if include_provenance:
        read.provenance = provenance_read(evaluation)
    return read


def provenance_read(evaluation: Evaluation) -> ProvenanceRead | None:
    """How an evaluation was scored, from what was stored; None before it was scored."""
    if evaluation.provenance is None:
        return None
    return ProvenanceRead.model_validate(
        {
            **evaluation.provenance,
            "prompt_version": evaluation.prompt_version,
            "rubric_hash": evaluation.rubric_hash,
        }
    )


async def list_evaluations(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    candidate_email: str | None,
    position: str | None,
    status: str | None,
) -> EvaluationPage:
    """A page of evaluations, newest first."""
    rows, next_cursor = await repository.list_evaluations(
        session,
        limit=limit,
        cursor=cursor,
        candidate_email=candidate_email,
        position=position,
        status=status,
    )
    return EvaluationPage(items=to_reads(rows), next_cursor=next_cursor)


async def delete_evaluation(session: AsyncSession, *, evaluation_id: str) -> None:
    """Erase an evaluation, or 404; its unsent emails are cancelled and their contents erased."""
    await outbox.cancel_for_evaluation(session, evaluation_id=evaluation_id)
    if not await repository.delete_evaluation(session, evaluation_id):
        raise NotFound(f"No evaluation {evaluation_id}.")


def to_read(evaluation: Evaluation) -> EvaluationRead:
    """The API view of a stored evaluation."""
    result = evaluation.result or {}
    return EvaluationRead.model_validate(
        {
            "id": evaluation.id,
            "status": evaluation.status,
            "candidate": Candidate(
                name=evaluation.candidate_name,
                email=evaluation.candidate_email,
                external_id=evaluation.candidate_external_id,
            ),
            "position": PositionRead(
                title=evaluation.position_title, level=evaluation.position_level
            ),
            "overall_score": evaluation.overall_score,
            "recommendation": evaluation.recommendation,
            "criteria": result.get("criteria", []),
            "summary": result.get("summary"),
            "portfolio": result.get("portfolio"),
            "partial": evaluation.partial,
            "needs_review": evaluation.needs_review,
            "model": evaluation.model,
            "prompt_version": evaluation.prompt_version,
            "usage": result.get("usage") or {},
            "cached": evaluation.cached,
            "notifications": [
                NotificationRead(
                    to=m.recipient,
                    kind=m.kind,
                    status=m.status,
                    attempts=m.attempts,
                    next_attempt_at=m.next_attempt_at if m.status == "failed" else None,
                )
                for m in evaluation.outbox_messages
            ],
            "timings_ms": result.get("timings_ms") or {},
            "error": evaluation.error,
            "created_at": evaluation.created_at,
            "completed_at": evaluation.completed_at,
            **review_fields(evaluation),
        }
    )


def to_reads(rows: Sequence[Evaluation]) -> list[EvaluationRead]:
    """The API views of several evaluations."""
    return [to_read(row) for row in rows]
