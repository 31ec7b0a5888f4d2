"""The durable outbox: one row per outgoing message, and the claim/lease/backoff machinery.

A row is written in the same transaction as what it follows up on, so that nothing is sent for
an evaluation that was never stored and nothing stored goes unsent. Deliverers claim due rows
(status `sending`, a lease in `claimed_until` and a fresh `claim_token`), send them without
holding a database connection, and mark them `sent` or `failed` only while they still own the
claim. The machinery does not depend on the channel: email and webhooks share it.

Statuses: `queued` (waiting for its first attempt), `sending` (claimed, leased), `sent`,
`failed` (the last attempt failed: retried at `next_attempt_at`, or given up when that is
null) and `cancelled` (its evaluation was deleted before it went out).

Erasure: deleting an evaluation cancels its unsent rows, mails and webhooks alike, and erases
what all of its rows carry (recipient, subject, bodies; URL and event) while keeping them as
tombstones (id, kind, status, Message-ID, attempts), so that a sweeper holding a claim finds the
row cancelled and sends nothing, and the outbox still records that a message went out. A
sweeper checks its claim just before handing a message over; a delete that commits in the few
milliseconds between that check and the end of the SMTP conversation (or the webhook's POST)
cannot recall a message already on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base, UTCDateTime, new_id, utcnow
from service.errors import database_unreachable

log = logging.getLogger(__name__)

# Recording outcomes while the database is away: the first pause, doubling to the cap.
RECORD_RETRY_FIRST_S = 0.2
RECORD_RETRY_CAP_S = 2.0


async def record_until_done(
    record: Callable[[], Awaitable[None]], *, stopping: asyncio.Event
) -> None:
    """Run `record` (the marks of what was delivered) again while the database cannot be
    reached, until it can or `stopping` is set.

    A message that went out but is not marked sent is sent again once its lease expires: a
    database that went away after a round's sends made every mail of the round arrive twice
    (found by the chaos run). The marks are made by claim token, so they land after the lease
    too, unless another worker has taken the rows over meanwhile (it sends them again: the case
    left, with the same Message-IDs)."""
    pause = RECORD_RETRY_FIRST_S
    while True:
        try:
            await record()
            return
        except Exception as exc:
            if not database_unreachable(exc) or stopping.is_set():
                raise
            log.warning("outcomes not recorded yet", extra={"error_type": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await stopping.wait()
        pause = min(pause * 2, RECORD_RETRY_CAP_S)


OutboxStatus = Literal["queued", "sending", "sent", "failed", "cancelled"]
MAX_ERROR_CHARS = 300


class OutboxMessage(Base):
    """One outgoing message, rendered at enqueue time, with its delivery state."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_message_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_outbox_message_evaluation_id", "evaluation_id"),
        Index("ix_outbox_message_claim_token", "claim_token"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    evaluation_id: Mapped[str | None] = mapped_column(
        ForeignKey("evaluation.id", ondelete="SET NULL"), default=None
    )
    # --- The email channel. An email is rendered by the worker when it is sent, from its
    # evaluation, in `language`: the API process only names it.
    recipient: Mapped[str | None] = mapped_column(String(320), default=None)
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    subject: Mapped[str | None] = mapped_column(String(500), default=None)
    text_body: Mapped[str | None] = mapped_column(Text, default=None)
    html_body: Mapped[str | None] = mapped_column(Text, default=None)
    # --- The webhook channel (service/webhooks): where it goes, the key whose secret signs
    # it, and its JSON event, written when queued.
    url: Mapped[str | None] = mapped_column(String(2048), default=None)
    signing_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="SET NULL"), default=None
    )
    payload: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    claim_token: Mapped[str | None] = mapped_column(String(36), default=None)
    # The error's type and short text: never a body.
    last_error: Mapped[str | None] = mapped_column(String(MAX_ERROR_CHARS), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


def _due(now: datetime, *, max_attempts: int) -> ColumnElement[bool]:
    """Rows a deliverer may claim: waiting and due, or sending past their lease."""
    return and_(
        OutboxMessage.attempts < max_attempts,
        or_(
            and_(
                OutboxMessage.status.in_(("queued", "failed")),
                OutboxMessage.next_attempt_at <= now,
            ),
            and_(OutboxMessage.status == "sending", OutboxMessage.claimed_until < now),
        ),
    )


async def claim(
    session: AsyncSession,
    *,
    token: str,
    lease_s: float,
    limit: int,
    max_attempts: int,
    evaluation_ids: Sequence[str] | None = None,
    channel: str | None = None,
) -> list[OutboxMessage]:
    """Claim up to `limit` due rows under `token` and return them; one short transaction.

    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so concurrent
    claimers take disjoint rows. On SQLite the claim is one conditional UPDATE: the due
    condition is repeated on the rows it updates, and SQLite's single writer serialises it.
    """
    now = utcnow()
    due = _due(now, max_attempts=max_attempts)
    if evaluation_ids is not None:
        due = and_(due, OutboxMessage.evaluation_id.in_(evaluation_ids))
    if channel is not None:
        due = and_(due, OutboxMessage.channel == channel)
    candidates = (
        select(OutboxMessage.id).where(due).order_by(OutboxMessage.next_attempt_at).limit(limit)
    )
    chosen: Sequence[str] | Select[str]
    if session.get_bind().dialect.name == "postgresql":
        # Selected first, not `id IN (subquery)`: PostgreSQL may rerun such a subquery for
        # each row, each run skipping the rows just updated, and claim far more than `limit`.
        chosen = list(await session.scalars(candidates.with_for_update(skip_locked=True)))
        if not chosen:
            return []
    else:
        # One statement: SQLite's write lock makes the pick and the claim atomic.
        chosen = candidates
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(chosen), due)
        .values(
            status="sending",
            claim_token=token,
            claimed_until=now + timedelta(seconds=lease_s),
            attempts=OutboxMessage.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    rows = await session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.claim_token == token, OutboxMessage.status == "sending")
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def still_claimed(session: AsyncSession, *, message_id: str, token: str) -> bool:
    """Whether the row is still ours to send (not cancelled, not re-claimed)."""
    return bool(await still_claimed_ids(session, message_ids=[message_id], token=token))


async def still_claimed_ids(
    session: AsyncSession, *, message_ids: Sequence[str], token: str
) -> set[str]:
    """Those of the rows that are still ours to send, in one query."""
    found = await session.scalars(select(OutboxMessage.id).where(_owned_any(message_ids, token)))
    return set(found)


def _owned(message_id: str, token: str) -> ColumnElement[bool]:
    return _owned_any([message_id], token)


def _owned_any(message_ids: Sequence[str], token: str) -> ColumnElement[bool]:
    return and_(
        OutboxMessage.id.in_(message_ids),
        OutboxMessage.claim_token == token,
        OutboxMessage.status == "sending",
    )


async def mark_sent(session: AsyncSession, *, message_id: str, token: str) -> bool:
    """Record a delivery, if the claim is still ours; whether it was."""
    return bool(await mark_sent_many(session, message_ids=[message_id], token=token))


async def mark_sent_many(session: AsyncSession, *, message_ids: Sequence[str], token: str) -> int:
    """Record the deliveries of the rows still claimed by us, in one statement; how many."""
    if not message_ids:
        return 0
    result = await session.execute(
        update(OutboxMessage)
        .where(_owned_any(message_ids, token))
        .values(
            status="sent",
            sent_at=utcnow(),
            claim_token=None,
            claimed_until=None,
            next_attempt_at=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def backoff_delay(attempts: int, *, base_s: float, cap_s: float) -> float:
    """Exponential backoff with equal jitter: half the delay fixed, half random."""
    delay = min(cap_s, base_s * 2.0 ** max(attempts - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)


async def mark_failed(
    session: AsyncSession,
    *,
    message_id: str,
    token: str,
    error: str,
    retry_in_s: float | None,
) -> bool:
    """Record a failed attempt: retried in `retry_in_s`, or given up when None."""
    next_attempt = None if retry_in_s is None else utcnow() + timedelta(seconds=retry_in_s)
    result = await session.execute(
        update(OutboxMessage)
        .where(_owned(message_id, token))
        .values(
            status="failed",
            claim_token=None,
            claimed_until=None,
            next_attempt_at=next_attempt,
            last_error=error[:MAX_ERROR_CHARS],
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def record_failure(
    session: AsyncSession,
    *,
    row: OutboxMessage,
    token: str,
    error: str,
    permanent: bool,
    max_attempts: int,
    backoff_base_s: float,
    backoff_cap_s: float,
) -> float | None:
    """Record a failed attempt of `row`: retried after a backoff, or given up when the failure
    is permanent or the attempts are spent. The retry delay, None when given up."""
    retry = None
    if not permanent and row.attempts < max_attempts:
        retry = backoff_delay(row.attempts, base_s=backoff_base_s, cap_s=backoff_cap_s)
    await mark_failed(session, message_id=row.id, token=token, error=error, retry_in_s=retry)
    return retry


async def release(session: AsyncSession, *, tokens: Iterable[str]) -> int:
    """Put rows claimed under `tokens` back in the queue, the interrupted attempt uncounted."""
    tokens = list(tokens)
    if not tokens:
        return 0
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.claim_token.in_(tokens), OutboxMessage.status == "sending")
        .values(
            status="queued",
            claim_token=None,
            claimed_until=None,
            next_attempt_at=utcnow(),
            attempts=OutboxMessage.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def depth(session: AsyncSession, *, channel: str | None = None) -> int:
    """Rows still to be sent: waiting, being sent, or failed with a retry scheduled."""
    waiting = or_(
        OutboxMessage.status.in_(("queued", "sending")),
        and_(OutboxMessage.status == "failed", OutboxMessage.next_attempt_at.is_not(None)),
    )
    if channel is not None:
        waiting = and_(waiting, OutboxMessage.channel == channel)
    count = await session.scalar(select(func.count()).select_from(OutboxMessage).where(waiting))
    return int(count or 0)


async def oldest_due(session: AsyncSession) -> datetime | None:
    """When the longest-waiting unclaimed row became due; None when none is due."""
    now = utcnow()
    oldest: datetime | None = await session.scalar(
        select(func.min(OutboxMessage.next_attempt_at)).where(
            OutboxMessage.status.in_(("queued", "failed")),
            OutboxMessage.next_attempt_at <= now,
        )
    )
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return oldest


async def due_channels(session: AsyncSession) -> set[str]:
    """The channels with a row a deliverer may claim now: one cheap read, no lock taken."""
    now = utcnow()
    found = await session.scalars(
        select(OutboxMessage.channel)
        .where(
            or_(
                and_(
                    OutboxMessage.status.in_(("queued", "failed")),
                    OutboxMessage.next_attempt_at <= now,
                ),
                and_(OutboxMessage.status == "sending", OutboxMessage.claimed_until < now),
            )
        )
        .distinct()
    )
    return set(found)


async def give_up_expired(session: AsyncSession, *, max_attempts: int) -> int:
    """Give up rows whose lease expired on their last allowed attempt (their sender died)."""
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.status == "sending",
            OutboxMessage.claimed_until < utcnow(),
            OutboxMessage.attempts >= max_attempts,
        )
        .values(
            status="failed",
            claim_token=None,
            claimed_until=None,
            next_attempt_at=None,
            last_error="lease expired on the last attempt",
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def cancel_for_evaluation(session: AsyncSession, *, evaluation_id: str) -> None:
    """Cancel an evaluation's unsent mails and webhooks, and erase what all its rows carry."""
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.evaluation_id == evaluation_id,
            OutboxMessage.status.not_in(("sent", "cancelled")),
        )
        .values(status="cancelled", claim_token=None, claimed_until=None, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.evaluation_id == evaluation_id)
        .values(
            evaluation_id=None,
            recipient="",
            subject="",
            text_body="",
            html_body=None,
            url=None,
            payload=None,
        )
        .execution_options(synchronize_session=False)
    )
