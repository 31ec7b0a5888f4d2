"""The idempotency_key table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base, UTCDateTime, new_id, utcnow


class IdempotencyKey(Base):
    """A client's Idempotency-Key, scoped to its API key: in progress, or the response given."""

    __tablename__ = "idempotency_key"
    __table_args__ = (
        UniqueConstraint("api_key_id", "key"),
        Index("ix_idempotency_key_expires_at", "expires_at"),
        Index("ix_idempotency_key_evaluation_id", "evaluation_id"),
        Index("ix_idempotency_key_batch_id", "batch_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the parsed request body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    # The first response as the bytes that were sent (response_body: records of older versions).
    response_text: Mapped[str | None] = mapped_column(Text, default=None)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Erasing the evaluation erases the replayable copy of it too.
    evaluation_id: Mapped[str | None] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), default=None
    )
    # A batch's record (POST /v1/evaluation-batches), erased with the batch.
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("evaluation_batch.id", ondelete="CASCADE"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
