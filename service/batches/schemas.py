"""Request and response bodies of the batch endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.evaluations.schemas import EXAMPLE_REQUEST, CallbackUrl

# The most any configuration allows (SCORER_MAX_BATCH_ITEMS is at most this).
MAX_BATCH_ITEMS_CEILING = 10_000
BatchStatus = Literal["pending", "completed"]
ItemStatus = Literal["pending", "completed", "failed", "invalid"]


class BatchCreate(BaseModel):
    """Interviews to score in the background; each item is an evaluation request."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": [EXAMPLE_REQUEST], "callback_url": None}]},
    )

    # Validated one by one, so that one bad item is reported against it alone.
    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS_CEILING,
        description="evaluation requests, each an EvaluationCreate validated on its own: at "
        "most SCORER_MAX_BATCH_ITEMS (default 500, 413 beyond; never more than "
        f"{MAX_BATCH_ITEMS_CEILING})",
    )
    callback_url: CallbackUrl | None = None


class BatchItem(BaseModel):
    """One item of a batch: its evaluation, or why it has none."""

    index: int
    status: ItemStatus
    evaluation_id: str | None = None
    href: str | None = None
    error: dict[str, Any] | None = None


class BatchCounts(BaseModel):
    """How many items are in each status."""

    pending: int = 0
    completed: int = 0
    failed: int = 0
    invalid: int = 0


class BatchRead(BaseModel):
    """A batch and its progress."""

    id: str
    status: BatchStatus
    total: int
    counts: BatchCounts
    items: list[BatchItem]
    callback_url: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
