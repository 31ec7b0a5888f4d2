"""The worker's backlog as the API reports it: in /readyz and in /metrics.

The API process writes work (outbox rows, queued evaluations) and a worker process does it; the
backlog is read from the database, so any API process reports the same figures whichever worker
is behind. `outstanding` is the same question asked by whoever waits for the worker to catch up
(the benchmark's drain, the tests' settle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.database import utcnow
from service.evaluations.models import Evaluation
from service.notifications.outbox import OutboxMessage


@dataclass(frozen=True)
class Backlog:
    """What waits for a worker: messages to deliver, evaluations to score, and how long the
    longest-waiting unclaimed one has been due (0 when nothing is)."""

    messages: int
    evaluations: int
    oldest_unclaimed_age_s: float

    def as_dict(self) -> dict[str, float | int]:
        """The figures as /readyz shows them."""
        return {
            "messages": self.messages,
            "evaluations": self.evaluations,
            "oldest_unclaimed_age_s": round(self.oldest_unclaimed_age_s, 3),
        }


_WAITING_MESSAGE = or_(
    OutboxMessage.status.in_(("queued", "sending")),
    and_(OutboxMessage.status == "failed", OutboxMessage.next_attempt_at.is_not(None)),
)
_PENDING_EVALUATION = and_(Evaluation.status == "pending", Evaluation.claimed_until.is_not(None))


def _aware(moment: datetime | None, now: datetime) -> datetime | None:
    # SQLite hands back naive datetimes (stored in UTC).
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=now.tzinfo)
    return moment


async def read_backlog(session: AsyncSession) -> Backlog:
    """The backlog now: four cheap reads, no lock taken."""
    now = utcnow()
    messages = await session.scalar(
        select(func.count()).select_from(OutboxMessage).where(_WAITING_MESSAGE)
    )
    evaluations = await session.scalar(
        select(func.count()).select_from(Evaluation).where(_PENDING_EVALUATION)
    )
    # Due and claimable by anyone: a queued or failed row whose time has come, an evaluation
    # whose claim (set at its creation when queued) has lapsed.
    oldest_message = await session.scalar(
        select(func.min(OutboxMessage.next_attempt_at)).where(
            OutboxMessage.status.in_(("queued", "failed")), OutboxMessage.next_attempt_at <= now
        )
    )
    oldest_evaluation = await session.scalar(
        select(func.min(Evaluation.claimed_until)).where(
            _PENDING_EVALUATION, Evaluation.claimed_until <= now
        )
    )
    due = [m for m in (_aware(oldest_message, now), _aware(oldest_evaluation, now)) if m]
    age = (now - min(due)).total_seconds() if due else 0.0
    return Backlog(int(messages or 0), int(evaluations or 0), max(age, 0.0))


async def outstanding(session: AsyncSession) -> int:
    """Work due or under way: messages queued, being sent or due for a retry, and evaluations
    waiting for a worker or being scored. A retry scheduled for later is not counted."""
    now = utcnow()
    messages = await session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            or_(
                OutboxMessage.status.in_(("queued", "sending")),
                and_(OutboxMessage.status == "failed", OutboxMessage.next_attempt_at <= now),
            )
        )
    )
    jobs = await session.scalar(
        select(func.count()).select_from(Evaluation).where(_PENDING_EVALUATION)
    )
    return int(messages or 0) + int(jobs or 0)
