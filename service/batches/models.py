"""The evaluation_batch table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.auth.models import DEFAULT_TENANT
from service.database import Base, UTCDateTime, new_id, utcnow


class EvaluationBatch(Base):
    """Many interviews submitted at once; each valid one is an evaluation with batch_id."""

    __tablename__ = "evaluation_batch"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="SET NULL"), default=None
    )
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # pending while any of its evaluations is; completed once all are completed or failed.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    total: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    # Items that failed validation: [{"index": i, "error": problem}]; they have no evaluation.
    invalid_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
