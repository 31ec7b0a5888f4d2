"""The evaluation_review table: every review ever made, never updated."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base, UTCDateTime, new_id, utcnow


class EvaluationReview(Base):
    """A reviewer's adjusted criterion scores and/or decision on an evaluation, with a reason."""

    __tablename__ = "evaluation_review"
    __table_args__ = (
        Index("ix_evaluation_review_evaluation_id_created_at", "evaluation_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    evaluation_id: Mapped[str] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"))
    # Kept when the key is deleted: the review stays on record, its author unknown.
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="SET NULL"), default=None
    )
    decision: Mapped[str | None] = mapped_column(String(32), default=None)
    # Only the scores this review changed, criterion key -> 1..5.
    criterion_scores: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(String(2000))
    # The scores as they stood after this review, computed once with the service's arithmetic.
    overall_score: Mapped[float | None] = mapped_column(Float, default=None)
    recommendation: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
