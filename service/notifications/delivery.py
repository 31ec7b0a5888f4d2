"""Delivery of the outbox: at once after a response, and by a sweeper for whatever is due.

The background task after a POST is only the fast path: it dies with the process. The sweeper,
started in lifespan, picks up rows that are queued (a crash before the fast path ran), failed
and due again (backoff with jitter), or claimed by a sender whose lease expired (a crash while
sending). No database connection is held while a mail is being sent: each claim and each mark
is its own short transaction. Logs name rows by id and errors by type: never a recipient, a
subject or a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.evaluations.schemas import MAX_RECRUITERS
from service.metrics import OUTBOX_DEPTH, OUTBOX_FAILURES
from service.notifications import outbox
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import DeliveryError, EmailSender, Mail

log = logging.getLogger(__name__)

# Evaluations delivered together on the fast path, and such batches in flight at once.
FAST_PATH_BATCH = 50
FAST_PATH_CONCURRENCY = 4


def _context(row: OutboxMessage) -> dict[str, object]:
    return {"outbox_id": row.id, "kind": row.kind, "attempt": row.attempts}


# Called with an evaluation's id after one of its messages changed status (e.g. to drop a
# cached read of the evaluation).
OnChange = Callable[[str], Awaitable[None]]


class Deliverer:
    """Claims due outbox rows, sends them and records the outcome; runs the sweeper."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: EmailSender,
        on_change: OnChange | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.sender = sender
        self.on_change = on_change
        self._inflight: set[asyncio.Task[int]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._batch_slots = asyncio.Semaphore(FAST_PATH_CONCURRENCY)

    async def deliver_evaluation(self, evaluation_id: str) -> None:
        """Send an evaluation's due mails now (the fast path after the response).

        Evaluations that finish together are delivered together: one claim, one check and one
        mark for the lot. A claim and a mark per mail cost a fifth of the CPU of a request
        under load (bench/profile.py), most of it SQLite writes.
        """
        future = self._waiting.get(evaluation_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[evaluation_id] = future
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="outbox-fast-path")
        try:
            # The deliverer owns the sending, not the request: stop() lets it finish or hands
            # its claims back, whatever happens to the request's task.
            await asyncio.shield(future)
        except Exception as exc:
            # The rows stay in the outbox; the sweeper retries them.
            log.error(
                "outbox delivery failed",
                extra={"evaluation_id": evaluation_id, "error_type": type(exc).__name__},
            )

    async def _drain(self) -> None:
        """Deliver the waiting evaluations, a batch at a time, a few batches at once."""
        while self._waiting and not self._stopping.is_set():
            await self._batch_slots.acquire()
            ids = list(itertools.islice(self._waiting, FAST_PATH_BATCH))
            futures = [self._waiting.pop(id_) for id_ in ids]
            task = asyncio.create_task(self._deliver_batch(ids, futures))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver_batch(self, ids: list[str], futures: list[asyncio.Future[None]]) -> int:
        outcome: BaseException | None = None
        try:
            return await self._claim_and_send(evaluation_ids=ids)
        except asyncio.CancelledError as exc:
            outcome = exc
            raise
        except Exception as exc:
            # Each waiting request logs it; the rows stay in the outbox for the sweeper.
            outcome = exc
            return 0
        finally:
            self._batch_slots.release()
            for future in futures:
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(None)

    async def sweep_once(self) -> int:
        """Send one batch of due rows; how many were claimed."""
        async with self.sessionmaker() as session, session.begin():
            given_up = await outbox.give_up_expired(
                session, max_attempts=self.settings.email_max_attempts
            )
        if given_up:
            log.warning("outbox rows given up after expired leases", extra={"count": given_up})
        claimed = await self._claim_and_send(evaluation_ids=None)
        async with self.sessionmaker() as session:
            OUTBOX_DEPTH.set(await outbox.depth(session))
        return claimed

    async def _claim_and_send(self, *, evaluation_ids: list[str] | None) -> int:
        settings = self.settings
        token = str(uuid.uuid4())
        sent: list[str] = []
        limit = settings.email_sweep_batch
        if evaluation_ids is not None:
            # Every mail of these evaluations: the candidate's and one per recruiter.
            limit = len(evaluation_ids) * (1 + MAX_RECRUITERS)
        try:
            async with self.sessionmaker() as session, session.begin():
                rows = await outbox.claim(
                    session,
                    token=token,
                    lease_s=settings.email_lease_s,
                    limit=limit,
                    max_attempts=settings.email_max_attempts,
                    evaluation_ids=evaluation_ids,
                    channel="email",
                )
            if not rows:
                return 0
            async with self.sessionmaker() as session:
                # Deleted (cancelled) or re-claimed since the claim: not ours to send any more.
                ours = await outbox.still_claimed_ids(
                    session, message_ids=[row.id for row in rows], token=token
                )
            for row in rows:
                if row.id not in ours:
                    log.info("outbox row no longer claimed, not sent", extra=_context(row))
            outcomes = await asyncio.gather(
                *(self._send(row, sent) for row in rows if row.id in ours)
            )
            failures = [(row, error) for row, error in outcomes if error is not None]
            # Shielded: mails that went out are recorded even when shutdown cancels us now.
            await asyncio.shield(self._record(sent, failures, token))
            changed = {row.evaluation_id for row, _ in outcomes if row.evaluation_id}
            if self.on_change is not None:
                for evaluation_id in changed:
                    await self.on_change(evaluation_id)
            return len(rows)
        except asyncio.CancelledError:
            # Shutting down mid-send: record what went out, give the rest back rather than
            # wait for the lease.
            await asyncio.shield(self._record(sent, [], token))
            await asyncio.shield(self._release([token]))
            raise

    async def _send(
        self, row: OutboxMessage, sent: list[str]
    ) -> tuple[OutboxMessage, DeliveryError | None]:
        settings = self.settings
        mail = Mail(
            message_id=row.message_id,
            sender=settings.email_from,
            recipient=row.recipient,
            subject=row.subject,
            text=row.text_body,
            html=row.html_body,
        )
        try:
            # Half the lease: the claim outlives the send, so no one else takes it meanwhile.
            async with asyncio.timeout(settings.email_lease_s / 2):
                await self.sender.send(mail)
        except DeliveryError as exc:
            return row, exc
        except TimeoutError:
            return row, DeliveryError("timed out")
        except Exception as exc:
            # Only the type: an unexpected error's text may quote the mail.
            return row, DeliveryError(f"{type(exc).__name__}")
        sent.append(row.id)
        log.info("email sent", extra=_context(row))
        return row, None

    async def _record(
        self,
        sent: list[str],
        failures: list[tuple[OutboxMessage, DeliveryError]],
        token: str,
    ) -> None:
        """One transaction for the outcomes of a batch."""
        if not sent and not failures:
            return
        settings = self.settings
        async with self.sessionmaker() as session, session.begin():
            marked = await outbox.mark_sent_many(session, message_ids=sent, token=token)
            sent.clear()
            for row, error in failures:
                OUTBOX_FAILURES.inc()
                retry = await outbox.record_failure(
                    session,
                    row=row,
                    token=token,
                    error=str(error),
                    permanent=error.permanent,
                    max_attempts=settings.email_max_attempts,
                    backoff_base_s=settings.email_backoff_base_s,
                    backoff_cap_s=settings.email_backoff_cap_s,
                )
                log.warning(
                    "email not sent" if retry is not None else "email given up",
                    extra={**_context(row), "error": str(error), "retry_in_s": retry},
                )
        if marked:
            log.debug("outbox rows recorded sent", extra={"count": marked})

    async def _release(self, tokens: list[str]) -> None:
        if not tokens:
            return
        async with self.sessionmaker() as session, session.begin():
            released = await outbox.release(session, tokens=tokens)
        if released:
            log.info("outbox claims released", extra={"count": released})

    def start(self) -> None:
        """Start the sweeper (when SCORER_EMAIL_SWEEPER is on)."""
        if self.settings.email_sweeper and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="outbox-sweeper")

    async def _sweep_forever(self) -> None:
        interval = self.settings.email_sweep_interval_s
        # The first sweep waits one interval too: replicas starting together do not sweep
        # together, and a request's own fast path goes first.
        while not await self._sleep(interval):
            # A full batch means more may be due: sweep again at once.
            claimed = batch = self.settings.email_sweep_batch
            while claimed >= batch and not self._stopping.is_set():
                try:
                    claimed = await self.sweep_once()
                except Exception as exc:
                    # Only the type: a database error's text carries the statement's parameters.
                    log.error("outbox sweep failed", extra={"error_type": type(exc).__name__})
                    claimed = 0

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when stopping; whether stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def stop(self) -> None:
        """Stop: deliveries in flight get a grace period to finish, then hand their claims back."""
        self._stopping.set()
        tasks: list[asyncio.Task[Any]] = [*self._inflight]
        if self._drainer is not None:
            tasks.append(self._drainer)
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.email_shutdown_grace_s)
            for task in pending:
                # Cancelled mid-send, a task releases its claim (see _claim_and_send).
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None
        # Not delivered by this process: the rows stay queued for the next sweeper.
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()


def get_deliverer(request: Request) -> Deliverer:
    """The process's outbox deliverer."""
    deliverer: Deliverer = request.app.state.deliverer
    return deliverer


DelivererDep = Annotated[Deliverer, Depends(get_deliverer)]
