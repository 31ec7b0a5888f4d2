"""Webhook events: checking a callback URL on submission, queueing an event when work ends."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import HttpUrl
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import Settings
from service.database import new_id, utcnow
from service.errors import UnprocessableRequest
from service.evaluations.models import Evaluation
from service.notifications.outbox import OutboxMessage
from service.webhooks.delivery import CHANNEL
from service.webhooks.guard import CallbackTargetRefused, check_target

if TYPE_CHECKING:
    from service.batches.models import EvaluationBatch
    from service.batches.schemas import BatchRead


class CallbackRefused(UnprocessableRequest):
    """A callback_url the SSRF guard refuses."""

    def __init__(self, detail: str, *, field: str = "callback_url") -> None:
        super().__init__(detail)
        self.field = field

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The 422 problem, naming the field as validation errors do."""
        body = super().problem(instance)
        body["errors"] = [{"field": self.field, "message": self.detail, "type": "callback_url"}]
        return body


async def check_callback(url: HttpUrl | str | None, *, settings: Settings) -> None:
    """Refuse (422) a callback URL the guard would not deliver to."""
    if url is None:
        return
    try:
        await check_target(str(url), allow_private=settings.webhook_allow_private)
    except CallbackTargetRefused as exc:
        raise CallbackRefused(str(exc)) from None


def evaluation_event(evaluation: Evaluation) -> dict[str, Any]:
    """The body of an evaluation's webhook: ids, outcome and links, no personal data."""
    return {
        "id": new_id(),
        "type": f"evaluation.{evaluation.status}",
        "created_at": utcnow().isoformat(),
        "data": {
            "id": evaluation.id,
            "status": evaluation.status,
            "href": f"/v1/evaluations/{evaluation.id}",
            "batch_id": evaluation.batch_id,
            "overall_score": evaluation.overall_score,
            "recommendation": evaluation.recommendation,
            "error": evaluation.error,
        },
    }


def batch_event(batch: EvaluationBatch, read: BatchRead) -> dict[str, Any]:
    """The body of a batch's webhook: its counts and link."""
    return {
        "id": new_id(),
        "type": "batch.completed",
        "created_at": utcnow().isoformat(),
        "data": {
            "id": batch.id,
            "status": batch.status,
            "href": f"/v1/evaluation-batches/{batch.id}",
            "total": batch.total,
            "counts": read.counts.model_dump(),
        },
    }


async def evaluation_finished(session: AsyncSession, *, evaluation: Evaluation) -> None:
    """Queue the evaluation's webhook, if it asked for one, in the caller's transaction."""
    url = (evaluation.request or {}).get("callback_url")
    if url:
        _enqueue(
            session,
            url=url,
            api_key_id=evaluation.api_key_id,
            event=evaluation_event(evaluation),
            evaluation_id=evaluation.id,
        )


async def batch_finished(session: AsyncSession, *, batch: EvaluationBatch, read: BatchRead) -> None:
    """Queue the batch's webhook, if it asked for one, in the caller's transaction."""
    if batch.callback_url:
        _enqueue(
            session,
            url=batch.callback_url,
            api_key_id=batch.api_key_id,
            event=batch_event(batch, read),
        )


def _enqueue(
    session: AsyncSession,
    *,
    url: str,
    api_key_id: str | None,
    event: dict[str, Any],
    evaluation_id: str | None = None,
) -> None:
    """Write the delivery to the outbox (channel webhook), signed by the key when sent.

    An evaluation's delivery is linked to it, so that erasing the evaluation cancels it."""
    session.add(
        OutboxMessage(
            channel=CHANNEL,
            kind=event["type"],
            evaluation_id=evaluation_id,
            url=url,
            signing_key_id=api_key_id,
            payload=json.dumps(event, separators=(",", ":")),
            message_id=event["id"],
        )
    )
