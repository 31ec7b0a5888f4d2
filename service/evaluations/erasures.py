"""Erasure reaches every process: each forgets its cached copies of an erased evaluation.

The process that serves a DELETE forgets at once. Every other process (API replicas, workers)
learns of it from the `erasure` row written in the erasure's transaction: an `ErasureWatcher`
reads the new rows every SCORER_ERASURE_POLL_S and forgets what they name (the cached reads of
the evaluation and of its tenant's list, the cached scoring result of its interview). Redis
plays no part in telling them, so an erasure made while Redis was down still reaches every
process's in-process copies, and a process that finds Redis down when it forgets drops all
cached reads before it reads from Redis again (service/cache/backend.py).

The bound: a process serves an erased evaluation from a cache for at most SCORER_ERASURE_POLL_S
after the erasure commits (plus the time of one query), as long as it reaches the database.
Rows are read with an overlap (late commits, clocks of other machines), kept for RETENTION_S and
pruned by whichever process comes first; a process that could not read them for that long
forgets everything it holds in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.cache.backend import READS_PREFIX, ResilientBackend
from service.cache.reads import invalidate_reads
from service.database import utcnow
from service.evaluations.models import Erasure

logger = logging.getLogger(__name__)

# Rows committed up to this long after their timestamp are still seen (a transaction that
# took its time, another machine's clock).
OVERLAP_S = 60.0
RETENTION_S = 86_400.0
PRUNE_EVERY_S = 600.0


class ForgetsResults(Protocol):
    """The scorer's part: dropping cached scoring results (service/evaluations/cached.py)."""

    async def forget(self, result_key: str) -> None:
        """Drop the cached result under this key."""

    async def forget_local(self) -> None:
        """Drop every result this process holds in process."""


async def forget_erased(
    erasure: Erasure, *, cache: ResilientBackend | None, scorer: ForgetsResults
) -> None:
    """Forget this process's cached copies of what `erasure` erased (reads: when `cache`)."""
    if cache is not None:
        await invalidate_reads(cache, tenant=erasure.tenant, evaluation_id=erasure.evaluation_id)
    if erasure.result_key is not None:
        await scorer.forget(erasure.result_key)


class ErasureWatcher:
    """Reads the erasures other processes committed and forgets what they erased."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        scorer: ForgetsResults,
        reads: ResilientBackend | None,
        poll_s: float,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._scorer = scorer
        self._reads = reads
        self._poll_s = poll_s
        self._seen: dict[str, datetime] = {}
        self._last_read: datetime | None = None
        self._last_prune: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Poll every `poll_s` until stopped."""
        self._task = asyncio.create_task(self._loop(), name="erasure-watcher")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self) -> int:
        """Forget what the erasures committed since the last poll erased; how many there were."""
        now = utcnow()
        if self._last_read is not None and (now - self._last_read).total_seconds() > RETENTION_S:
            # Rows may have been pruned unread: forget everything held in process.
            await self._forget_everything()
        since = (self._last_read or now) - timedelta(seconds=OVERLAP_S)
        async with self._sessionmaker() as session:
            rows = list(await session.scalars(select(Erasure).where(Erasure.erased_at >= since)))
        fresh = [row for row in rows if row.id not in self._seen]
        for row in fresh:
            await forget_erased(row, cache=self._reads, scorer=self._scorer)
            self._seen[row.id] = row.erased_at
        self._seen = {key: at for key, at in self._seen.items() if at >= since}
        self._last_read = now
        await self._prune(now)
        return len(fresh)

    async def _forget_everything(self) -> None:
        await self._scorer.forget_local()
        if self._reads is not None and self._reads.kind == "memory":
            await self._reads.clear_prefix(READS_PREFIX)

    async def _prune(self, now: datetime) -> None:
        if (
            self._last_prune is not None
            and (now - self._last_prune).total_seconds() < PRUNE_EVERY_S
        ):
            return
        self._last_prune = now
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                delete(Erasure).where(Erasure.erased_at < now - timedelta(seconds=RETENTION_S))
            )

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The type only: a driver's message may carry a connection string.
                logger.warning("erasure poll failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._poll_s)
