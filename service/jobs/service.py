"""Asynchronous evaluations: recording how one ended (the worker's part)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import service as batch_service
from service.config import Settings
from service.database import utcnow
from service.errors import TYPE_BASE
from service.evaluations.models import Evaluation
from service.evaluations.scorer import ScoringResult
from service.evaluations.service import apply_result
from service.jobs import repository
from service.notifications.follow_ups import follow_up_rows
from service.notifications.outbox import OutboxMessage
from service.webhooks import service as webhook_service

EVALUATIONS_PATH = "/v1/evaluations"


async def finish_evaluation(
    session: AsyncSession,
    *,
    evaluation_id: str,
    worker_id: str,
    lease_s: float,
    result: ScoringResult | None,
    problem: dict[str, Any] | None,
    settings: Settings,
) -> int | None:
    """Record a scoring's outcome if the lease is still ours: the number of follow-up emails
    it queued, or None when it was not recorded (the lease was lost).

    The conditional UPDATE comes first so that the row stays locked (PostgreSQL) or the
    database's single writer is ours (SQLite) until the commit: the outcome of an evaluation
    is recorded once, by the worker that holds it.
    """
    if not await repository.renew(
        session, evaluation_id=evaluation_id, worker_id=worker_id, lease_s=lease_s
    ):
        return None
    evaluation = await session.scalar(
        select(Evaluation)
        .where(Evaluation.id == evaluation_id)
        .execution_options(populate_existing=True)
    )
    if evaluation is None:
        return None
    emails = 0
    if result is not None:
        apply_result(evaluation, result, settings=settings)
        # The follow-up emails, in the transaction that completes it, as a synchronous one's.
        rows = follow_up_rows(
            evaluation_id=evaluation.id,
            candidate_email=evaluation.candidate_email,
            notify=evaluation.request.get("notify"),
            language=evaluation.request.get("language", "en"),
            settings=settings,
            now=utcnow(),
        )
        if rows:
            await session.execute(insert(OutboxMessage), rows)
        emails = len(rows)
    else:
        evaluation.status = "failed"
        evaluation.error = problem
        evaluation.completed_at = utcnow()
    await _finished(session, evaluation)
    return emails


async def give_up_exhausted(session: AsyncSession, *, max_attempts: int, limit: int) -> list[str]:
    """Fail the waiting evaluations that used up their attempts, each with its last reason,
    as any failed evaluation (webhook, batch progress); their ids."""
    given_up = []
    for evaluation in await repository.exhausted(session, max_attempts=max_attempts, limit=limit):
        reason = evaluation.last_error or "its worker stopped before it finished (lease expired)"
        evaluation.status = "failed"
        evaluation.error = {
            "type": TYPE_BASE + "attempts-exhausted",
            "title": "Scoring did not finish",
            "status": 500,
            "detail": f"Scoring was attempted {evaluation.attempts} times "
            f"(SCORER_JOB_MAX_ATTEMPTS) without finishing; the last attempt: {reason}.",
            "instance": f"{EVALUATIONS_PATH}/{evaluation.id}",
        }
        evaluation.completed_at = utcnow()
        await _finished(session, evaluation)
        given_up.append(evaluation.id)
    return given_up


async def _finished(session: AsyncSession, evaluation: Evaluation) -> None:
    """Release the finished evaluation's lease; queue its webhook and its batch's progress."""
    evaluation.claimed_by = None
    evaluation.claimed_until = None
    await session.flush()
    await webhook_service.evaluation_finished(session, evaluation=evaluation)
    if evaluation.batch_id is not None:
        await batch_service.item_finished(session, batch_id=evaluation.batch_id)
