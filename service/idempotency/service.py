"""Idempotency-Key semantics, after the IETF httpapi draft and Stripe.

- A new key is claimed in a short transaction of its own, before any upstream call; the
  unique (api_key_id, key) constraint decides which of concurrent requests is first.
- The response's bytes are stored in the same transaction as the evaluation (the group
  writer's, service/evaluations/service.py), so a retry finds both or neither.
- The same key and body again: the stored response, with `Idempotent-Replayed: true`.
  Another body: 422. While the first is still running: 409 with Retry-After.
- A request that fails (an upstream error, say) releases its key: the draft lets errors be
  retried, and nothing was stored that a replay could return.
- Keys expire after SCORER_IDEMPOTENCY_TTL_S; an in-progress key whose request outlived the
  scoring deadline (a crashed process) may be claimed again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Update, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.database import utcnow
from service.errors import Conflict, UnprocessableRequest
from service.idempotency.models import IdempotencyKey

IN_PROGRESS, COMPLETED = "in_progress", "completed"
# Past the scoring deadline by this much, an in-progress key is taken to be abandoned.
STALE_AFTER_DEADLINE_S = 60


class IdempotencyKeyInUse(Conflict):
    slug = "idempotency-key-in-use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry later.",
            headers={"Retry-After": "1"},
        )


class IdempotencyKeyReused(UnprocessableRequest):
    slug = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with another request body.")


@dataclass(frozen=True)
class Claim:
    """A key this request holds while it runs."""

    record_id: str


@dataclass(frozen=True)
class Replay:
    """The response first given under a key: its status and the very bytes that were sent."""

    status: int
    body: bytes
    evaluation_id: str | None
    batch_id: str | None = None


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    api_key_id: str,
    key: str,
    fingerprint: str,
    settings: Settings,
) -> Claim | Replay:
    """Claim `key` for this request, or the first response under it; 409 or 422 otherwise."""
    for _ in range(2):
        try:
            async with sessionmaker() as session, session.begin():
                return await _claim(
                    session, api_key_id=api_key_id, key=key, fingerprint=fingerprint,
                    settings=settings,
                )  # fmt: skip
        except IntegrityError:
            # A concurrent request inserted the same key first: read what it left.
            continue
    raise IdempotencyKeyInUse()


async def _claim(
    session: AsyncSession, *, api_key_id: str, key: str, fingerprint: str, settings: Settings
) -> Claim | Replay:
    now = utcnow()
    stale = now - timedelta(seconds=settings.scoring_deadline_s + STALE_AFTER_DEADLINE_S)
    # A write first: on SQLite it takes the write lock before the read below, so that the
    # read-then-insert cannot fail on a snapshot another writer has moved past.
    await session.execute(
        delete(IdempotencyKey).where(
            or_(
                IdempotencyKey.expires_at < now,
                (IdempotencyKey.api_key_id == api_key_id)
                & (IdempotencyKey.key == key)
                & (IdempotencyKey.status == IN_PROGRESS)
                & (IdempotencyKey.created_at < stale),
            )
        )
    )
    record = await session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key
        )
    )
    if record is not None:
        if record.request_hash != fingerprint:
            raise IdempotencyKeyReused()
        if record.status == IN_PROGRESS:
            raise IdempotencyKeyInUse()
        if record.response_text is not None:
            body = record.response_text.encode()
        elif record.response_body is not None:
            # A record of an earlier version, which kept the parsed body.
            body = json.dumps(record.response_body, ensure_ascii=False).encode()
        else:
            raise IdempotencyKeyInUse()
        return Replay(
            status=record.response_status or 200,
            body=body,
            evaluation_id=record.evaluation_id,
            batch_id=record.batch_id,
        )
    record = IdempotencyKey(
        api_key_id=api_key_id,
        key=key,
        request_hash=fingerprint,
        status=IN_PROGRESS,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.idempotency_ttl_s),
    )
    session.add(record)
    await session.flush()
    return Claim(record_id=record.id)


def completion(
    claim: Claim,
    *,
    status: int,
    body: bytes,
    evaluation_id: str | None = None,
    batch_id: str | None = None,
) -> Update:
    """The statement that completes a claimed key with the response sent: to be executed in
    the transaction that stores what the response describes."""
    return (
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claim.record_id)
        .values(
            status=COMPLETED,
            response_status=status,
            response_text=body.decode(),
            evaluation_id=evaluation_id,
            batch_id=batch_id,
        )
    )


async def release(sessionmaker: async_sessionmaker[AsyncSession], *, claim: Claim) -> None:
    """Give the key up after a failure, so that the client's retry runs again."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claim.record_id, IdempotencyKey.status == IN_PROGRESS
            )
        )
