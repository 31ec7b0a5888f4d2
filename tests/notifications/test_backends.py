"""The file and console backends, and SMTP over STARTTLS and implicit TLS with a login."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import trustme
from fastapi import FastAPI
from pydantic import SecretStr

from service.auth.service import create_api_key
from service.config import Settings, SettingsError, load_settings
from service.main import create_app
from tests.conftest import interview, serving, settle
from tests.notifications.conftest import (
    PASSWORD,
    SENDER,
    USERNAME,
    SmtpServer,
    outbox_rows,
)


@pytest.mark.parametrize("settings_overrides", [{"email_backend": "file"}])
async def test_file_backend_writes_eml_files_the_stdlib_parses(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    settings: Settings,
    app: FastAPI,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]

    await settle(app)
    fetched = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
    assert [n["status"] for n in fetched["notifications"]] == ["sent", "sent"]
    files = sorted(settings.email_dir.iterdir())
    # Written atomically: no temporary file is left behind.
    assert [f.suffix for f in files] == [".eml", ".eml"]
    by_recipient: dict[str, EmailMessage] = {}
    for path in files:
        message = BytesParser(policy=default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        assert not message.defects
        by_recipient[str(message["To"])] = message
    rows = {row.recipient: row for row in await outbox_rows(app)}
    assert set(by_recipient) == {"jane@example.com", "lead@example.com"}
    for address, message in by_recipient.items():
        assert message["Message-ID"] == rows[address].message_id
        assert message["From"] == f"Interview Scorer <{SENDER}>"
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None
        assert html is not None
        assert "Backend Engineer" in text.get_content()
        assert "<html" in html.get_content()
    summary = by_recipient["lead@example.com"].get_body(("plain",))
    assert summary is not None
    assert "69.7 / 100" in summary.get_content()


@pytest.mark.parametrize("settings_overrides", [{"email_backend": "console"}])
async def test_console_backend_prints_the_mail(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    app: FastAPI,
) -> None:
    response = await client.post(
        "/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth
    )
    assert response.status_code == 201
    await settle(app)

    printed = capsys.readouterr().out
    assert "Subject: Thank you for interviewing for Backend Engineer" in printed
    assert "To: jane@example.com" in printed


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
def tls_server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[SmtpServer]:
    """An SMTP server with a certificate for 127.0.0.1, requiring TLS and a login."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = SmtpServer(tls=request.param, server_context=context)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(tls_server: SmtpServer, ca: trustme.CA, tmp_path: Path) -> dict[str, Any]:
    """The smtp backend with TLS, trusting the test CA, logging in."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": tls_server.port,
        "smtp_tls": tls_server.tls,
        "smtp_username": USERNAME,
        "smtp_password": PASSWORD,
        "smtp_ca_file": ca_file,
        "smtp_timeout_s": 5,
    }


# aiosmtpd warns about AUTH without STARTTLS even on an implicit TLS connection.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("tls_server", ["starttls", "tls"], indirect=True)
async def test_smtp_over_tls_with_login(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    tls_server: SmtpServer,
    app: FastAPI,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]

    await settle(app)
    fetched = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
    assert [n["status"] for n in fetched["notifications"]] == ["sent", "sent"]
    assert len(tls_server.inbox.received) == 2
    for mail in tls_server.inbox.received:
        assert mail.tls is True
        assert mail.login == USERNAME.encode()
        assert mail.mail_from == SENDER


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
async def test_a_wrong_password_keeps_the_mail_queued_for_retry(
    settings: Settings, scoring: respx.MockRouter, tls_server: SmtpServer
) -> None:
    app = create_app(settings.model_copy(update={"smtp_password": SecretStr("wrong")}))
    async with serving(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as client:
            async with app.state.sessionmaker() as session, session.begin():
                _, key = await create_api_key(session, name="t", scopes=("write", "read"))
            headers = {"Authorization": f"Bearer {key}"}
            response = await client.post(
                "/v1/evaluations", json=interview(notify={"candidate": True}), headers=headers
            )
            # Settled: the attempt failed and its retry is scheduled for later.
            await settle(app)
            fetched = await client.get(f"/v1/evaluations/{response.json()['id']}", headers=headers)
        [notification] = fetched.json()["notifications"]
        assert notification["status"] == "failed"
        assert notification["next_attempt_at"] is not None
        [row] = await outbox_rows(app)
        assert row.last_error is not None
        assert "535" in row.last_error
    assert tls_server.inbox.received == []


def test_a_lease_shorter_than_a_send_is_refused_at_start() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(
            _env_file=None,
            llm_provider="simulated",
            email_backend="smtp",
            smtp_timeout_s=30,
            email_lease_s=40,
        )
    message = str(raised.value)
    assert "SCORER_EMAIL_LEASE_S" in message
    assert "\n" not in message
