"""A real SMTP server (aiosmtpd) on a loopback port, and helpers to read what it received."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import pytest
import respx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi import FastAPI
from sqlalchemy import select

from service.notifications.outbox import OutboxMessage
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    scores_content,
)
from tests.databases import fresh_postgres_database
from tests.servers import free_port

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"
SENDER = "no-reply@interview-scorer.local"
USERNAME = "scorer"
PASSWORD = "s3cret-smtp"


@dataclass
class Received:
    """One mail as the server got it: the conversation's facts, the envelope and the message."""

    helo: str | None
    esmtp: bool
    tls: bool
    login: bytes | None
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class Inbox:
    """The aiosmtpd handler: accepts every mail and keeps it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        # A slow server: DATA is answered after `delay_s`; `in_data` is set when DATA begins.
        self.delay_s = 0.0
        self.in_data = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = BytesParser(policy=default).parsebytes(envelope.original_content)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login if session.authenticated else None
        with self._lock:
            self.received.append(
                Received(
                    helo=session.host_name,
                    esmtp=session.extended_smtp,
                    tls=session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                    login=login,
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                )
            )
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        """The mails received for `address`."""
        with self._lock:
            return [r for r in self.received if address in r.rcpt_tos]


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


class SmtpServer:
    """An aiosmtpd server that can be stopped and started again on the same port."""

    def __init__(self, *, tls: str = "none", server_context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.tls = tls
        self.server_context = server_context
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen (blocks briefly while the server's thread starts)."""
        kwargs: dict[str, Any] = {}
        if self.tls == "starttls":
            kwargs = {
                "tls_context": self.server_context,
                "require_starttls": True,
                "authenticator": _authenticate,
                "auth_required": True,
            }
        elif self.tls == "tls":
            kwargs = {
                "ssl_context": self.server_context,
                "authenticator": _authenticate,
                "auth_required": True,
                # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS anyway.
                "auth_require_tls": False,
            }
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until start()."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback, running."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    """The smtp backend against the test server; fast retries and sweeps."""
    return {
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_server.port,
        "smtp_tls": "none",
        "smtp_timeout_s": 2,
        "email_lease_s": 10,
        "email_backoff_base_s": 0.05,
        "email_backoff_cap_s": 0.2,
        "email_sweep_interval_s": 0.05,
    }


@pytest.fixture
def scoring(upstream: respx.MockRouter) -> respx.MockRouter:
    """The LLM and the analyzer answering: overall 69.7, recommendation hire."""
    upstream.post(CHAT).mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(ANALYZE).mock(return_value=analysis(82))
    return upstream


async def outbox_rows(app: FastAPI) -> list[OutboxMessage]:
    """Every outbox row, oldest first."""
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id)
        )
        return list(rows)


async def eventually(check: Callable[[], Awaitable[bool]], *, within_s: float = 15) -> None:
    """Wait until `check()` holds (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110 (polls the database, no event to wait on)
            await asyncio.sleep(0.02)


@pytest.fixture
def postgres_url(postgres_server: str, postgres_template: str) -> Iterator[str]:
    """A migrated database of its own on the session's PostgreSQL server (tests/databases.py),
    whichever backend the rest of the run uses; its asyncpg URL."""
    with fresh_postgres_database(postgres_server, template=postgres_template) as url:
        yield url
