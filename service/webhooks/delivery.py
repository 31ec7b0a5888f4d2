"""Webhook delivery: the outbox's `webhook` channel, sent signed, retried with backoff.

A webhook is an outbox row (service/notifications/outbox.py) written in the transaction that
finished the evaluation or the batch, so a crash loses none. For this channel `url` is the
callback URL, `signing_key_id` the API key whose secret signs it, `payload` the JSON event and
`kind` the event type. An evaluation's delivery is linked to it (`evaluation_id`), so erasing
the evaluation cancels it; it is not among the evaluation's emails.

The deliverer claims due rows, resolves the target once and checks every address (DNS may have
changed since the submission), connects to a checked address with the name kept in Host and
SNI (service/webhooks/guard.py), POSTs the body without following redirects, and marks the row
sent on a 2xx; anything else (a redirect too) is retried with backoff until
SCORER_WEBHOOK_MAX_ATTEMPTS. A refused target or a missing key is given up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.models import ApiKey
from service.config import Settings
from service.database import new_id
from service.notifications import outbox
from service.notifications.outbox import OutboxMessage
from service.webhooks.guard import CallbackTargetRefused, Resolver, resolve_target, system_resolver
from service.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header

logger = logging.getLogger(__name__)

CHANNEL = "webhook"
SWEEP_BATCH = 50


class WebhookFailed(Exception):
    """The receiver did not accept the delivery; `permanent` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def build_webhook_client(*, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The client deliveries go through: httpx's own transport, which takes the SNI name of a
    pinned request; no proxy from the environment (it would resolve the name itself); no
    kept-alive connections (one to an address must not serve another name's request)."""
    return httpx.AsyncClient(
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=SWEEP_BATCH, max_keepalive_connections=0),
    )


async def deliver(
    client: httpx.AsyncClient,
    *,
    url: str,
    body: bytes,
    secret: str,
    event_type: str,
    delivery_id: str,
    timeout_s: float,
    allow_private: bool,
    resolver: Resolver = system_resolver,
) -> None:
    """POST one signed delivery; raises WebhookFailed unless the receiver answers 2xx."""
    try:
        target = await resolve_target(url, allow_private=allow_private, resolver=resolver)
    except CallbackTargetRefused as exc:
        raise WebhookFailed(str(exc), permanent=True) from None
    timestamp = int(time.time())
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "interview-scorer-webhooks",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(secret, timestamp, body),
        "X-Scorer-Event": event_type,
        "X-Scorer-Delivery": delivery_id,
    }
    extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
    response: httpx.Response | None = None
    for address in target.addresses:
        try:
            response = await client.post(
                target.pinned(address),
                content=body,
                headers=headers,
                timeout=timeout_s,
                extensions=extensions,
            )
            break
        except httpx.ConnectError:
            continue  # the next checked address, if the name has another
        except httpx.HTTPError as exc:
            raise WebhookFailed(type(exc).__name__) from None
    if response is None:
        raise WebhookFailed("ConnectError")
    if response.is_redirect:
        raise WebhookFailed(
            f"the receiver answered {response.status_code} (redirects are not followed)"
        )
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"the receiver answered {response.status_code}")


class WebhookDeliverer:
    """Claims due webhook rows, delivers them and records the outcome, now and by sweeping."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        resolver: Resolver = system_resolver,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._client = build_webhook_client()
        self._resolver = resolver
        # The claim outlives a send: at most the timeout, and the target check before it.
        self._lease_s = 3 * settings.webhook_timeout_s + 30
        self._wake = asyncio.Event()
        self._tokens: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start delivering (what is due, then whenever woken or at each poll)."""
        self._stopping.clear()
        self._loop_task = asyncio.create_task(self._loop(), name="webhook-deliverer")

    def wake(self) -> None:
        """Deliver what is due now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the round in flight (bounded by the send timeout), else cut it off and
        hand its rows back, their attempt uncounted."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            _, pending = await asyncio.wait(
                [self._loop_task], timeout=self._settings.webhook_timeout_s + 5
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._tokens:
            try:
                async with self._sessionmaker() as session, session.begin():
                    await outbox.release(session, tokens=self._tokens)
            except Exception as exc:
                # Their leases expire instead, and they are claimed again then.
                logger.warning("could not release webhooks", extra={"error": type(exc).__name__})
        await self._client.aclose()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = await self.deliver_due()
            except Exception as exc:
                logger.warning("webhook sweep failed", extra={"error": type(exc).__name__})
                claimed = 0
            if claimed >= SWEEP_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.job_poll_interval_s):
                    await self._wake.wait()

    async def deliver_due(self) -> int:
        """Claim and deliver one round of due webhooks; how many were claimed."""
        token = new_id()
        self._tokens.add(token)
        async with self._sessionmaker() as session, session.begin():
            rows = await outbox.claim(
                session,
                token=token,
                lease_s=self._lease_s,
                limit=SWEEP_BATCH,
                max_attempts=self._settings.webhook_max_attempts,
                channel=CHANNEL,
            )
        if rows:
            await asyncio.gather(*(self._send(row, token) for row in rows))
        self._tokens.discard(token)
        return len(rows)

    async def _send(self, row: OutboxMessage, token: str) -> None:
        settings = self._settings
        context = {"outbox_id": row.id, "kind": row.kind, "attempt": row.attempts}
        async with self._sessionmaker() as session:
            if not await outbox.still_claimed(session, message_id=row.id, token=token):
                return
            key = await session.get(ApiKey, row.signing_key_id) if row.signing_key_id else None
            secret = key.webhook_secret if key is not None else None
        error: WebhookFailed | None = None
        if secret is None:
            error = WebhookFailed("the signing API key no longer exists", permanent=True)
        else:
            try:
                await deliver(
                    self._client,
                    url=row.url or "",
                    body=(row.payload or "").encode(),
                    secret=secret,
                    event_type=row.kind,
                    delivery_id=row.message_id,
                    timeout_s=settings.webhook_timeout_s,
                    allow_private=settings.webhook_allow_private,
                    resolver=self._resolver,
                )
            except WebhookFailed as exc:
                error = exc
        retry: list[float | None] = []

        async def record() -> None:
            async with self._sessionmaker() as session, session.begin():
                if error is None:
                    await outbox.mark_sent(session, message_id=row.id, token=token)
                    return
                retry[:] = [
                    await outbox.record_failure(
                        session,
                        row=row,
                        token=token,
                        error=str(error),
                        permanent=error.permanent,
                        max_attempts=settings.webhook_max_attempts,
                        backoff_base_s=settings.webhook_backoff_base_s,
                        backoff_cap_s=settings.webhook_backoff_cap_s,
                    )
                ]

        # A delivery the database cannot be told of would be delivered again after its lease.
        await outbox.record_until_done(record, stopping=self._stopping)
        if error is None:
            logger.info("webhook delivered", extra=context)
            return
        logger.warning(
            "webhook not delivered" if retry[0] is not None else "webhook given up",
            extra={**context, "error": str(error), "retry_in_s": retry[0]},
        )
