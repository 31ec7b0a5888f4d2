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
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.notifications import outbox
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import DeliveryError, EmailSender, Mail

log = logging.getLogger(__name__)

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

    async def deliver_evaluation(self, evaluation_id: str) -> None:
        """Send an evaluation's due mails now (the fast path after the response)."""
        # The deliverer owns the sending task, not the request: stop() lets it finish or
        # hands its claims back, whatever happens to the request's task.
        task = asyncio.create_task(self._claim_and_send(evaluation_id=evaluation_id))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            await asyncio.shield(task)
        except Exception as exc:
            # The rows stay in the outbox; the sweeper retries them.
            log.error(
                "outbox delivery failed",
                extra={"evaluation_id": evaluation_id, "error_type": type(exc).__name__},
            )

    async def sweep_once(self) -> int:
        """Send one batch of due rows; how many were claimed."""
        async with self.sessionmaker() as session, session.begin():
            given_up = await outbox.give_up_expired(
                session, max_attempts=self.settings.email_max_attempts
            )
        if given_up:
            log.warning("outbox rows given up after expired leases", extra={"count": given_up})
        return await self._claim_and_send(evaluation_id=None)

    async def _claim_and_send(self, *, evaluation_id: str | None) -> int:
        settings = self.settings
        token = str(uuid.uuid4())
        try:
            async with self.sessionmaker() as session, session.begin():
                rows = await outbox.claim(
                    session,
                    token=token,
                    lease_s=settings.email_lease_s,
                    limit=settings.email_sweep_batch,
                    max_attempts=settings.email_max_attempts,
                    evaluation_id=evaluation_id,
                    channel="email",
                )
            if rows:
                results = await asyncio.gather(
                    *(self._send(row, token) for row in rows), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, Exception):
                        # Left claimed: the lease runs out and a sweeper takes the row again.
                        log.error("outbox send failed", extra={"error_type": type(result).__name__})
            return len(rows)
        except asyncio.CancelledError:
            # Shutting down mid-send: give the rows back rather than wait for the lease.
            await asyncio.shield(self._release([token]))
            raise

    async def _send(self, row: OutboxMessage, token: str) -> None:
        settings = self.settings
        mail = Mail(
            message_id=row.message_id,
            sender=settings.email_from,
            recipient=row.recipient,
            subject=row.subject,
            text=row.text_body,
            html=row.html_body,
        )
        context = {"outbox_id": row.id, "kind": row.kind, "attempt": row.attempts}
        async with self.sessionmaker() as session:
            # Deleted (cancelled) or re-claimed since the claim: not ours to send any more.
            if not await outbox.still_claimed(session, message_id=row.id, token=token):
                log.info("outbox row no longer claimed, not sent", extra=context)
                return
        error: DeliveryError | None = None
        try:
            # Half the lease: the claim outlives the send, so no one else takes it meanwhile.
            async with asyncio.timeout(settings.email_lease_s / 2):
                await self.sender.send(mail)
        except DeliveryError as exc:
            error = exc
        except TimeoutError:
            error = DeliveryError("timed out")
        except Exception as exc:
            # Only the type: an unexpected error's text may quote the mail.
            error = DeliveryError(f"{type(exc).__name__}")
        if error is None:
            # Shielded: a mail that went out is recorded even when shutdown cancels us now.
            marked = await asyncio.shield(self._mark_sent(row.id, token))
            log.info("email sent", extra={**context, "recorded": marked})
        else:
            retry = None
            if not error.permanent and row.attempts < settings.email_max_attempts:
                retry = outbox.backoff_delay(
                    row.attempts,
                    base_s=settings.email_backoff_base_s,
                    cap_s=settings.email_backoff_cap_s,
                )
            async with self.sessionmaker() as session, session.begin():
                await outbox.mark_failed(
                    session, message_id=row.id, token=token, error=str(error), retry_in_s=retry
                )
            log.warning(
                "email not sent" if retry is not None else "email given up",
                extra={**context, "error": str(error), "retry_in_s": retry},
            )
        if self.on_change is not None and row.evaluation_id is not None:
            await self.on_change(row.evaluation_id)

    async def _mark_sent(self, message_id: str, token: str) -> bool:
        async with self.sessionmaker() as session, session.begin():
            return await outbox.mark_sent(session, message_id=message_id, token=token)

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
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.email_shutdown_grace_s)
            for task in pending:
                # Cancelled mid-send, a task releases its claim (see _claim_and_send).
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None


def get_deliverer(request: Request) -> Deliverer:
    """The process's outbox deliverer."""
    deliverer: Deliverer = request.app.state.deliverer
    return deliverer


DelivererDep = Annotated[Deliverer, Depends(get_deliverer)]
