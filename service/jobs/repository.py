"""Leases on pending evaluations: claim, renew, release.

An evaluation waiting for a worker is `pending` with `claimed_until` set and in the past;
a worker claims it by moving `claimed_until` into the future under its own `claimed_by`, and
renews that while it scores. Pending rows with no `claimed_until` at all are not jobs (a
synchronous request's row, say) and are never claimed.

Each claim counts an attempt: after SCORER_JOB_MAX_ATTEMPTS the evaluation is given up
(service/jobs/service.py) instead of claimed again at every lease expiry.

On PostgreSQL the candidates are locked with FOR UPDATE SKIP LOCKED so that concurrent
workers take disjoint rows; SQLite ignores the clause, and its single writer together with
the condition repeated in the UPDATE means that a row another worker took first no longer
matches: no evaluation is claimed by two workers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.database import utcnow
from service.evaluations.models import Evaluation


def _claimable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Evaluation.status == "pending",
        Evaluation.claimed_until.is_not(None),
        Evaluation.claimed_until <= now,
    )


def _attempts_left(max_attempts: int) -> ColumnElement[bool]:
    return Evaluation.attempts < max_attempts


def _owned(evaluation_id: str, worker_id: str) -> ColumnElement[bool]:
    return and_(
        Evaluation.id == evaluation_id,
        Evaluation.status == "pending",
        Evaluation.claimed_by == worker_id,
    )


async def claim(
    session: AsyncSession, *, worker_id: str, lease_s: float, limit: int, max_attempts: int
) -> Sequence[str]:
    """Claim up to `limit` waiting evaluations with attempts left, oldest first; their ids.

    Each claim is an attempt; `last_error` is cleared, to be set if this attempt fails (a
    worker that dies leaves it empty: its lease expired)."""
    now = utcnow()
    claimable = and_(_claimable(now), _attempts_left(max_attempts))
    # A materialized CTE: PostgreSQL may run an IN (... LIMIT n) subquery of an UPDATE more
    # than once and so claim more than `limit` rows.
    candidates = (
        select(Evaluation.id)
        .where(claimable)
        .order_by(Evaluation.claimed_until, Evaluation.created_at, Evaluation.item_index)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    result = await session.execute(
        update(Evaluation)
        .where(Evaluation.id.in_(select(candidates.c.id)), claimable)
        .values(
            claimed_by=worker_id,
            claimed_until=now + timedelta(seconds=lease_s),
            attempts=Evaluation.attempts + 1,
            last_error=None,
        )
        .returning(Evaluation.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def exhausted(
    session: AsyncSession, *, max_attempts: int, limit: int
) -> Sequence[Evaluation]:
    """Waiting evaluations that used up their attempts, locked (PostgreSQL) for giving up."""
    found = await session.scalars(
        select(Evaluation)
        .where(_claimable(utcnow()), ~_attempts_left(max_attempts))
        .order_by(Evaluation.claimed_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return found.all()


async def record_error(
    session: AsyncSession, *, evaluation_id: str, worker_id: str, error: str
) -> None:
    """Note why this attempt failed; the lease runs out and the next attempt (if any) follows."""
    await session.execute(
        update(Evaluation)
        .where(_owned(evaluation_id, worker_id))
        .values(last_error=error[:300])
        .execution_options(synchronize_session=False)
    )


async def has_claimable(session: AsyncSession) -> bool:
    """Whether an evaluation is waiting for a worker: one cheap read, no lock taken."""
    found = await session.scalar(select(Evaluation.id).where(_claimable(utcnow())).limit(1))
    return found is not None


async def renew(
    session: AsyncSession, *, evaluation_id: str, worker_id: str, lease_s: float
) -> bool:
    """Extend the lease, if it is still ours; whether it was (and now is locked by us)."""
    result = await session.execute(
        update(Evaluation)
        .where(_owned(evaluation_id, worker_id))
        .values(claimed_until=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def release(session: AsyncSession, *, worker_id: str) -> int:
    """Hand the worker's unfinished evaluations back, claimable at once, the interrupted
    attempt uncounted; how many."""
    result = await session.execute(
        update(Evaluation)
        .where(Evaluation.status == "pending", Evaluation.claimed_by == worker_id)
        .values(claimed_by=None, claimed_until=utcnow(), attempts=Evaluation.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))
