"""Email delivery from the outbox, in the worker process.

The API process writes an outbox row that names a mail and its evaluation; the worker claims
due rows, renders each from its evaluation (service/notifications/follow_ups.py), sends it and
records the outcome. Rows are found in the database, not in memory: what a request queued, what
failed and is due again (backoff with jitter), and what a crashed sender had claimed and whose
lease expired are all picked up the same way. The worker's watcher wakes the deliverer when
work is committed; `email_sweep_interval_s` is only the fallback. No database connection is held
while a mail is being sent: each claim and each mark is its own short transaction. Logs name rows
by id and errors by type: never a recipient, a subject or a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.metrics import OUTBOX_FAILURES
from service.notifications import outbox
from service.notifications.follow_ups import EvaluationFacts, render_mail
from service.notifications.mime import Mail
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import DeliveryError, EmailSender

log = logging.getLogger(__name__)


def _context(row: OutboxMessage) -> dict[str, object]:
    return {"outbox_id": row.id, "kind": row.kind, "attempt": row.attempts}


# The evaluations that mails are rendered from, by id (given by the worker, which knows them).
LoadFacts = Callable[[AsyncSession, set[str]], Awaitable[dict[str, EvaluationFacts]]]


class Deliverer:
    """Claims due email rows, renders and sends them, records the outcome; runs the sweeper."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: EmailSender,
        load_facts: LoadFacts,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.sender = sender
        self._load_facts = load_facts
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._round: asyncio.Task[int] | None = None

    def wake(self) -> None:
        """Sweep now rather than at the next interval (new work was committed)."""
        self._wake.set()

    async def sweep_once(self) -> int:
        """Send one batch of due rows; how many were claimed."""
        async with self.sessionmaker() as session, session.begin():
            given_up = await outbox.give_up_expired(
                session, max_attempts=self.settings.email_max_attempts
            )
        if given_up:
            log.warning("outbox rows given up after expired leases", extra={"count": given_up})
        return await self._claim_and_send()

    async def _claim_and_send(self) -> int:
        settings = self.settings
        token = str(uuid.uuid4())
        sent: list[str] = []
        try:
            async with self.sessionmaker() as session, session.begin():
                rows = await outbox.claim(
                    session,
                    token=token,
                    lease_s=settings.email_lease_s,
                    limit=settings.email_sweep_batch,
                    max_attempts=settings.email_max_attempts,
                    channel="email",
                )
            if not rows:
                return 0
            mails = await self._render(rows, token)
            outcomes = await asyncio.gather(*(self._send(row, mail, sent) for row, mail in mails))
            failures = [(row, error) for row, error in outcomes if error is not None]
            # Shielded: mails that went out are recorded even when shutdown cancels us now.
            await asyncio.shield(
                outbox.record_until_done(
                    lambda: self._record(sent, failures, token), stopping=self._stopping
                )
            )
            return len(rows)
        except asyncio.CancelledError:
            # Shutting down mid-send: record what went out, give the rest back rather than
            # wait for the lease.
            await asyncio.shield(self._record(sent, [], token))
            await asyncio.shield(self._release([token]))
            raise

    async def _render(
        self, rows: list[OutboxMessage], token: str
    ) -> list[tuple[OutboxMessage, Mail]]:
        """The claimed rows that are still ours, each with its mail rendered from its evaluation.

        A row whose evaluation was erased since the claim is cancelled by the erasure: not
        ours to send any more, and there is nothing left to render it from."""
        ids = {row.evaluation_id for row in rows if row.evaluation_id}
        async with self.sessionmaker() as session:
            ours = await outbox.still_claimed_ids(
                session, message_ids=[row.id for row in rows], token=token
            )
            evaluations = await self._load_facts(session, ids)
        mails: list[tuple[OutboxMessage, Mail]] = []
        for row in rows:
            evaluation = evaluations.get(row.evaluation_id or "")
            if row.id not in ours or evaluation is None:
                log.info("outbox row no longer claimed, not sent", extra=_context(row))
                continue
            mails.append((row, render_mail(row, evaluation, settings=self.settings)))
        return mails

    async def _send(
        self, row: OutboxMessage, mail: Mail, sent: list[str]
    ) -> tuple[OutboxMessage, DeliveryError | None]:
        settings = self.settings
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
        """One transaction for the outcomes of a batch; `sent` is emptied once it commits."""
        if not sent and not failures:
            return
        settings = self.settings
        retries: list[float | None] = []
        async with self.sessionmaker() as session, session.begin():
            marked = await outbox.mark_sent_many(session, message_ids=list(sent), token=token)
            for row, error in failures:
                retries.append(
                    await outbox.record_failure(
                        session,
                        row=row,
                        token=token,
                        error=str(error),
                        permanent=error.permanent,
                        max_attempts=settings.email_max_attempts,
                        backoff_base_s=settings.email_backoff_base_s,
                        backoff_cap_s=settings.email_backoff_cap_s,
                    )
                )
        sent.clear()
        for (row, error), retry in zip(failures, retries, strict=True):
            OUTBOX_FAILURES.inc()
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
            self._stopping.clear()
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="outbox-sweeper")

    async def _sweep_forever(self) -> None:
        batch = self.settings.email_sweep_batch
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._round = asyncio.create_task(self.sweep_once())
                claimed = await asyncio.shield(self._round)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Only the type: a database error's text carries the statement's parameters.
                log.error("outbox sweep failed", extra={"error_type": type(exc).__name__})
                claimed = 0
            finally:
                self._round = None
            # A full batch means more may be due: sweep again at once.
            if claimed >= batch:
                continue
            await self._sleep(self.settings.email_sweep_interval_s)

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when woken or stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def stop(self) -> None:
        """Stop: a round in flight gets a grace period to finish, then hands its claims back."""
        self._stopping.set()
        self._wake.set()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is None:
            return
        current = self._round
        if current is not None:
            _, pending = await asyncio.wait([current], timeout=self.settings.email_shutdown_grace_s)
            for task in pending:
                # Cancelled mid-send, a round releases its claim (see _claim_and_send).
                task.cancel()
            await asyncio.gather(current, return_exceptions=True)
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
