"""The per-process worker that scores pending evaluations in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.database import new_id
from service.errors import ServiceError
from service.evaluations.canonical import Interview
from service.evaluations.models import Evaluation
from service.evaluations.schemas import EvaluationCreate
from service.evaluations.scorer import Scores, ScoringResult
from service.jobs import repository
from service.jobs.queue import validation_problem
from service.jobs.service import EVALUATIONS_PATH, finish_evaluation, give_up_exhausted
from service.metrics import JOBS_GIVEN_UP

logger = logging.getLogger(__name__)

# Evaluations given up per look (more are given up at the next).
GIVE_UP_BATCH = 100

# Called with an evaluation's id once its outcome is committed, and whether it queued emails:
# to drop cached reads of it, and as the fast path of the emails and webhooks the outcome
# queued (their sweepers send them anyway).
AfterFinish = Callable[[str, bool], Awaitable[None]]


class JobRunner:
    """Claims pending evaluations, scores them with bounded concurrency, records the outcome.

    One per process, started and stopped by the lifespan. Work is found in the database, not
    in memory: what this process accepted, what a batch queued and what a crashed or stopped
    process left behind are all picked up the same way. Stopping cancels the scorings in
    flight and hands their evaluations back, still pending, for the next start.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        scorer: Scores,
        concurrency: int,
        after_finish: AfterFinish | None = None,
    ) -> None:
        self.worker_id = new_id()
        self._after_finish = after_finish
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._scorer = scorer
        self._concurrency = concurrency
        self._lease_s = settings.job_lease_s
        self._wake = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._scorings: set[asyncio.Task[ScoringResult]] = set()
        self._stopping = False
        # SQLite has one writer: this process's jobs take turns rather than meet in SQLite's
        # busy handler, whose sleeps grow to 100 ms. PostgreSQL needs no such turn.
        self._writes: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if settings.is_sqlite else contextlib.nullcontext()
        )

    def start(self) -> None:
        """Start looking for work (at once: that is the recovery after a restart)."""
        self._stopping = False
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")

    def wake(self) -> None:
        """Look for work now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the scorings in flight and hand their evaluations back, still pending.

        Only the upstream calls are cancelled: a task cut off inside a database transaction
        could leave SQLite's write lock held. The dispatcher ends after its current round, the
        jobs after their current statement.
        """
        self._stopping = True
        self._wake.set()
        for task in self._scorings:
            task.cancel()
        tasks = [t for t in (self._dispatcher, *self._jobs) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with self._sessionmaker() as session, session.begin():
                released = await repository.release(session, worker_id=self.worker_id)
        except Exception as exc:
            # Their leases expire instead; another start picks them up then.
            logger.warning("could not release evaluations", extra={"error": type(exc).__name__})
            return
        if released:
            logger.info("released pending evaluations", extra={"count": released})

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._jobs)
            claimed: list[str] = []
            if free > 0:
                try:
                    await self._give_up_exhausted()
                    async with self._writes, self._sessionmaker() as session, session.begin():
                        claimed = list(
                            await repository.claim(
                                session,
                                worker_id=self.worker_id,
                                lease_s=self._lease_s,
                                limit=free,
                                max_attempts=self._settings.job_max_attempts,
                            )
                        )
                except Exception as exc:
                    logger.warning("claiming failed", extra={"error": type(exc).__name__})
            if self._stopping:
                return  # what was just claimed is released by stop()
            for evaluation_id in claimed:
                task = asyncio.create_task(self._run(evaluation_id), name="evaluation-job")
                self._jobs.add(task)
                task.add_done_callback(self._job_done)
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.job_poll_interval_s):
                    await self._wake.wait()

    async def _give_up_exhausted(self) -> None:
        async with self._writes, self._sessionmaker() as session, session.begin():
            given_up = await give_up_exhausted(
                session, max_attempts=self._settings.job_max_attempts, limit=GIVE_UP_BATCH
            )
        if not given_up:
            return
        JOBS_GIVEN_UP.inc(len(given_up))
        for evaluation_id in given_up:
            logger.warning("evaluation given up", extra={"evaluation": evaluation_id})
            if self._after_finish is not None:
                await self._after_finish(evaluation_id, False)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._wake.set()

    async def _run(self, evaluation_id: str) -> None:
        instance = f"{EVALUATIONS_PATH}/{evaluation_id}"
        result: ScoringResult | None = None
        problem: dict[str, Any] | None = None
        try:
            async with self._sessionmaker() as session:
                evaluation = await session.get(Evaluation, evaluation_id)
            if evaluation is None:
                return
            try:
                payload = EvaluationCreate.model_validate(evaluation.request)
            except ValidationError as exc:
                problem = validation_problem(exc, instance=instance)
            else:
                # No connection is held while the upstreams are awaited; the lease is renewed
                # in its own short transactions beside them.
                holder = asyncio.create_task(self._hold_lease(evaluation_id))
                scoring = asyncio.create_task(
                    self._scorer.score(Interview.of(payload, tenant=evaluation.tenant))
                )
                self._scorings.add(scoring)
                try:
                    result = await scoring
                except asyncio.CancelledError:
                    if self._stopping:
                        return  # left pending, released by stop()
                    raise
                except Exception as exc:
                    if self._stopping:
                        # Cut off by the stop (the SDK may turn a cancellation into a
                        # connection error): not a failure of the evaluation; left pending.
                        return
                    if isinstance(exc, ServiceError):
                        problem = exc.problem(instance)
                    else:
                        logger.error("scoring failed", extra={"error": type(exc).__name__})
                        problem = ServiceError("An unexpected error occurred.").problem(instance)
                finally:
                    self._scorings.discard(scoring)
                    scoring.cancel()
                    holder.cancel()
                    await asyncio.gather(holder, return_exceptions=True)
            async with self._writes, self._sessionmaker() as session, session.begin():
                emails = await finish_evaluation(
                    session,
                    evaluation_id=evaluation_id,
                    worker_id=self.worker_id,
                    lease_s=self._lease_s,
                    result=result,
                    problem=problem,
                    settings=self._settings,
                )
            if emails is None:
                logger.warning("lease lost before the outcome", extra={"evaluation": evaluation_id})
            elif self._after_finish is not None:
                await self._after_finish(evaluation_id, emails > 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease expires and another attempt follows, up to SCORER_JOB_MAX_ATTEMPTS.
            # The type only: the message may carry request data.
            error = type(exc).__name__
            logger.error(
                "evaluation job failed", extra={"evaluation": evaluation_id, "error": error}
            )
            with contextlib.suppress(Exception):
                async with self._writes, self._sessionmaker() as session, session.begin():
                    await repository.record_error(
                        session, evaluation_id=evaluation_id, worker_id=self.worker_id, error=error
                    )

    async def _hold_lease(self, evaluation_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                async with self._writes, self._sessionmaker() as session, session.begin():
                    held = await repository.renew(
                        session,
                        evaluation_id=evaluation_id,
                        worker_id=self.worker_id,
                        lease_s=self._lease_s,
                    )
            except Exception as exc:
                logger.warning("lease renewal failed", extra={"error": type(exc).__name__})
                continue
            if not held:
                return
