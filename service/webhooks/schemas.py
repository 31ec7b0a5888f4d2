"""The webhook events, declared in the OpenAPI document's `webhooks` section.

The bodies are built in service/webhooks/service.py; these models state their contract for
the document (and so for the generated TypeScript client), and
tests/jobs/test_webhook_events.py checks real deliveries against what the document says.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.batches.schemas import BatchCounts
from service.evaluations.schemas import Recommendation


class EvaluationEventData(BaseModel):
    """The evaluation that finished: ids, outcome and link, no personal data."""

    id: str
    status: Literal["completed", "failed"]
    href: str = Field(description="the evaluation's path: GET it with the key for the rest")
    batch_id: str | None = None
    overall_score: float | None = None
    recommendation: Recommendation | None = None
    error: dict[str, object] | None = Field(None, description="why it failed (a problem)")


class EvaluationEvent(BaseModel):
    """Sent when an asynchronous evaluation with a `callback_url` finishes."""

    id: str = Field(description="the delivery's id, also in X-Scorer-Delivery")
    type: Literal["evaluation.completed", "evaluation.failed"]
    created_at: datetime
    data: EvaluationEventData


class BatchEventData(BaseModel):
    """The batch that finished, with its counts and link."""

    id: str
    status: Literal["completed"]
    href: str
    total: int
    counts: BatchCounts


class BatchEvent(BaseModel):
    """Sent when every item of a batch with a `callback_url` has finished."""

    id: str = Field(description="the delivery's id, also in X-Scorer-Delivery")
    type: Literal["batch.completed"]
    created_at: datetime
    data: BatchEventData
