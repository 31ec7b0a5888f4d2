"""The evaluation table."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.auth.models import DEFAULT_TENANT
from service.database import Base, UTCDateTime, new_id, utcnow

if TYPE_CHECKING:
    from service.notifications.outbox import OutboxMessage
    from service.reviews.models import EvaluationReview


class Evaluation(Base):
    """One scored interview, with what it was scored from and how (provenance)."""

    __tablename__ = "evaluation"
    __table_args__ = (
        # The list: a tenant's evaluations, newest first.
        Index("ix_evaluation_tenant_created_at_id", "tenant", "created_at", "id"),
        Index("ix_evaluation_candidate_email", "candidate_email"),
        Index("ix_evaluation_position_title", "position_title"),
        Index("ix_evaluation_status", "status"),
        # Asynchronous work (service/jobs): claimable rows, and a batch's items in order.
        Index("ix_evaluation_status_claimed_until", "status", "claimed_until"),
        Index("ix_evaluation_batch_id_item_index", "batch_id", "item_index"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(16))
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="SET NULL"), default=None
    )
    # The tenant of the key that made it: only that tenant's keys see it.
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    candidate_name: Mapped[str] = mapped_column(String(200))
    candidate_email: Mapped[str] = mapped_column(String(320))
    candidate_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    position_title: Mapped[str] = mapped_column(String(200))
    position_level: Mapped[str | None] = mapped_column(String(100), default=None)
    # The whole request as received, so that a score can be explained and re-scored later.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # criteria, summary, portfolio, usage and timings as shown to the client.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    overall_score: Mapped[float | None] = mapped_column(Float, default=None)
    recommendation: Mapped[str | None] = mapped_column(String(32), default=None)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    prompt_version: Mapped[str | None] = mapped_column(String(32), default=None)
    rubric_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # Raw LLM outputs, token usage and system fingerprint of every attempt.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # Human reviews, oldest first; loaded with the evaluation, erased with it by the database.
    reviews: Mapped[list[EvaluationReview]] = relationship(
        lazy="selectin",
        order_by="EvaluationReview.created_at",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    # --- Asynchronous evaluations and batches (service/jobs, service/batches). ---
    # A worker's lease on a pending evaluation: whoever holds an unexpired one scores it.
    claimed_by: Mapped[str | None] = mapped_column(String(36), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("evaluation_batch.id", ondelete="CASCADE"), default=None
    )
    item_index: Mapped[int | None] = mapped_column(Integer, default=None)
    # How many times a worker claimed it, and why the last attempt did not finish: after
    # SCORER_JOB_MAX_ATTEMPTS it is failed with that reason rather than claimed again.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(300), default=None)

    # Follow-up emails (service/notifications), loaded with the evaluation in one more query
    # per batch of evaluations; the database clears the link when the evaluation is deleted.
    # Its webhooks are linked too (so that an erasure cancels them) but are not among these.
    outbox_messages: Mapped[list[OutboxMessage]] = relationship(
        primaryjoin="and_(Evaluation.id == foreign(OutboxMessage.evaluation_id), "
        "OutboxMessage.channel == 'email')",
        lazy="selectin",
        order_by="[OutboxMessage.created_at, OutboxMessage.id]",
        passive_deletes=True,
    )


class Erasure(Base):
    """An evaluation erased, remembered for a while so that every process forgets its copies.

    Written in the erasure's transaction; each process reads the new ones every
    SCORER_ERASURE_POLL_S (service/evaluations/erasures.py). Holds ids and a hash, nothing of
    the interview."""

    __tablename__ = "erasure"
    __table_args__ = (Index("ix_erasure_erased_at", "erased_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    evaluation_id: Mapped[str] = mapped_column(String(36))
    tenant: Mapped[str] = mapped_column(String(64))
    # The result cache's key of the erased interview (a hash), when it could be rebuilt.
    result_key: Mapped[str | None] = mapped_column(String(64), default=None)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
