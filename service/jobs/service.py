"""Asynchronous evaluations: accepting one, and recording how it ended."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.batches import service as batch_service
from service.config import Settings
from service.database import utcnow
from service.errors import UnprocessableRequest
from service.evaluations.models import Evaluation
from service.evaluations.schemas import EvaluationCreate, EvaluationRead
from service.evaluations.scorer import ScoringResult
from service.evaluations.service import apply_result, to_read
from service.jobs import repository
from service.jobs.queue import queued_evaluation
from service.notifications.follow_ups import enqueue_follow_ups
from service.webhooks import service as webhook_service

EVALUATIONS_PATH = "/v1/evaluations"


def prefers_async(prefer: str | None) -> bool:
    """Whether a Prefer header (RFC 7240) asks for respond-async."""
    if not prefer:
        return False
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in prefer.split(","))


def check_synchronous(payload: EvaluationCreate) -> None:
    """Refuse (422) what only an asynchronous request can have: a callback."""
    if payload.callback_url is not None:
        raise UnprocessableRequest("callback_url needs Prefer: respond-async.")


async def submit_evaluation(
    session: AsyncSession, *, payload: EvaluationCreate, api_key: ApiKey, settings: Settings
) -> EvaluationRead:
    """Store a pending evaluation for a worker to score; the caller wakes the worker."""
    await webhook_service.check_callback(payload.callback_url, settings=settings)
    evaluation = queued_evaluation(payload, api_key=api_key)
    session.add(evaluation)
    await session.flush()
    return to_read(evaluation)


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
        payload = EvaluationCreate.model_validate(evaluation.request)
        emails = len(enqueue_follow_ups(evaluation, payload=payload, settings=settings))
    else:
        evaluation.status = "failed"
        evaluation.error = problem
        evaluation.completed_at = utcnow()
    evaluation.claimed_by = None
    evaluation.claimed_until = None
    await session.flush()
    await webhook_service.evaluation_finished(session, evaluation=evaluation)
    if evaluation.batch_id is not None:
        await batch_service.item_finished(session, batch_id=evaluation.batch_id)
    return emails
