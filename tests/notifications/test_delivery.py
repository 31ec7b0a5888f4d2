"""Follow-up emails through a real SMTP server: delivery, content, outages, crashes, deletes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.auth.service import create_api_key
from service.config import Settings
from service.logs import configure_logging
from service.main import create_app
from service.migrate import upgrade
from service.notifications import outbox
from service.notifications.delivery import Deliverer
from tests.conftest import completion, interview, scores_content, serving, settle
from tests.databases import Cluster, postgres_mode, with_database
from tests.notifications.conftest import (
    ANALYZE,
    CHAT,
    SENDER,
    Received,
    SmtpServer,
    eventually,
    outbox_rows,
)

CANDIDATE = "jane@example.com"
RECRUITER = "lead@example.com"


def parts(received: Received) -> tuple[str, str]:
    """The text and HTML parts of a received mail."""
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def statuses(client: httpx.AsyncClient, auth: dict[str, str], id_: str) -> list[str]:
    """The evaluation's mail statuses once the worker has done what is due."""
    await settle(client._transport.app)  # type: ignore[attr-defined]
    response = await client.get(f"/v1/evaluations/{id_}", headers=auth)
    assert response.status_code == 200
    return [n["status"] for n in response.json()["notifications"]]


async def test_follow_ups_are_delivered_after_the_response(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)

    assert response.status_code == 201, response.text
    body = response.json()
    # The response was written before delivery: it shows the mails queued.
    assert body["notifications"] == [
        {
            "to": CANDIDATE,
            "kind": "candidate_follow_up",
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": None,
        },
        {
            "to": RECRUITER,
            "kind": "recruiter_summary",
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": None,
        },
    ]
    assert await statuses(client, auth, body["id"]) == ["sent", "sent"]

    rows = {row.recipient: row for row in await outbox_rows(app)}
    for address in (CANDIDATE, RECRUITER):
        [mail] = smtp_server.inbox.to(address)
        # The conversation and the envelope.
        assert mail.esmtp is True
        assert mail.helo
        assert mail.tls is False
        assert mail.mail_from == SENDER
        assert mail.rcpt_tos == [address]
        # The headers.
        message = mail.message
        assert message["To"] == address
        assert message["From"] == f"Interview Scorer <{SENDER}>"
        assert message["Message-ID"] == rows[address].message_id
        assert re.fullmatch(r"<[0-9a-f-]{36}@interview-scorer\.local>", message["Message-ID"])
        assert message["Date"]
        assert message["Auto-Submitted"] == "auto-generated"
        assert rows[address].sent_at is not None
        assert rows[address].attempts == 1
        text, html = parts(mail)
        assert "Backend Engineer" in text
        assert "Backend Engineer" in html

    candidate = smtp_server.inbox.to(CANDIDATE)[0]
    assert candidate.message["Subject"] == "Thank you for interviewing for Backend Engineer"
    text, html = parts(candidate)
    assert "Dear Jane Doe" in text
    assert "<p>Dear Jane Doe,</p>" in html


async def test_the_candidate_mail_never_shows_a_score(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    body = response.json()
    assert body["overall_score"] == 69.7
    assert body["recommendation"] == "hire"
    await settle(app)

    [candidate] = smtp_server.inbox.to(CANDIDATE)
    text, html = parts(candidate)
    for shown in (text, html, candidate.message["Subject"]):
        assert "69.7" not in shown
        assert not re.search(r"\bhire\b|recommend|score|technical_depth|/ 5", shown, re.I)
        assert body["id"] not in shown

    [summary] = smtp_server.inbox.to(RECRUITER)
    text, html = parts(summary)
    assert summary.message["Subject"] == "Interview scored: Jane Doe, Backend Engineer (69.7)"
    for shown in (text, html):
        assert "69.7 / 100" in shown
        assert "hire" in shown
        assert "technical_depth: 4 / 5" in shown
        assert "communication: 3 / 5" in shown
        assert f"/v1/evaluations/{body['id']}" in shown
        assert "jane@example.com" in shown


async def test_flags_and_korean_templates(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": None}))
    )
    upstream.post(ANALYZE).mock(return_value=httpx.Response(503))
    candidate = {"name": "김지원", "email": "jiwon@example.com"}
    response = await client.post(
        "/v1/evaluations", json=interview(candidate=candidate, language="ko"), headers=auth
    )
    assert response.status_code == 201, response.text
    assert response.json()["partial"] is True
    await settle(app)

    [thanks] = smtp_server.inbox.to("jiwon@example.com")
    assert thanks.message["Subject"] == "Backend Engineer 면접에 참여해 주셔서 감사합니다"
    text, html = parts(thanks)
    assert "김지원 님께" in text
    assert "김지원 님께" in html
    [summary] = smtp_server.inbox.to(RECRUITER)
    text, html = parts(summary)
    assert "일부 결과" in text
    assert "communication: 근거 부족" in text
    assert "technical_depth: 4 / 5" in html


async def test_html_part_escapes_what_the_client_sent(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    candidate = {"name": "<b>Jane</b> & co", "email": CANDIDATE}
    await client.post("/v1/evaluations", json=interview(candidate=candidate), headers=auth)
    await settle(app)

    [mail] = smtp_server.inbox.to(CANDIDATE)
    text, html = parts(mail)
    assert "Dear <b>Jane</b> & co," in text
    assert "Dear &lt;b&gt;Jane&lt;/b&gt; &amp; co," in html


async def test_no_notify_no_mail(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    response = await client.post(
        "/v1/evaluations",
        json=interview(notify={"candidate": False, "recruiters": [RECRUITER, "LEAD@example.com"]}),
        headers=auth,
    )
    body = response.json()
    # One summary per address, however it was written.
    assert [(n["to"], n["kind"]) for n in body["notifications"]] == [
        (RECRUITER, "recruiter_summary")
    ]
    response = await client.post("/v1/evaluations", json=interview(notify=None), headers=auth)
    assert response.json()["notifications"] == []
    await settle(app)
    assert [r.rcpt_tos for r in smtp_server.inbox.received] == [[RECRUITER]]


async def test_smtp_down_then_up_every_mail_arrives_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    smtp_server.stop()
    # The test drives the deliverer itself, one round at a time.
    await app.state.worker.stop()
    deliverer: Deliverer = app.state.deliverer
    ids = []
    for n in range(3):
        notify = {"candidate": True, "recruiters": [f"lead{n}@example.com"]}
        response = await client.post("/v1/evaluations", json=interview(notify=notify), headers=auth)
        # The outage does not touch the evaluation.
        assert response.status_code == 201
        assert response.json()["status"] == "completed"
        ids.append(response.json()["id"])
    assert await deliverer.sweep_once() == 6

    failed = (await client.get(f"/v1/evaluations/{ids[0]}", headers=auth)).json()
    for notification in failed["notifications"]:
        assert notification["status"] == "failed"
        assert notification["attempts"] == 1
        assert notification["next_attempt_at"] is not None
    for row in await outbox_rows(app):
        assert row.last_error is not None
        assert "Connect" in row.last_error

    await deliverer.sweep_once()  # still down: another failed attempt, nothing lost
    smtp_server.start()

    async def all_sent() -> bool:
        await deliverer.sweep_once()
        return all(row.status == "sent" for row in await outbox_rows(app))

    await eventually(all_sent)
    ids_received = Counter(r.message["Message-ID"] for r in smtp_server.inbox.received)
    assert len(ids_received) == 6
    assert set(ids_received.values()) == {1}
    assert {row.message_id for row in await outbox_rows(app)} == set(ids_received)
    for id_ in ids:
        assert await statuses(client, auth, id_) == ["sent", "sent"]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": 9,  # discard: nothing listens, the connection is refused
            "smtp_tls": "none",
            "smtp_timeout_s": 2,
            "email_max_attempts": 2,
            "email_backoff_base_s": 0.01,
            "email_backoff_cap_s": 0.01,
            "email_sweeper": False,
        }
    ],
)
async def test_gives_up_after_the_last_attempt(
    client: httpx.AsyncClient, auth: dict[str, str], scoring: respx.MockRouter, app: FastAPI
) -> None:
    response = await client.post(
        "/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth
    )
    id_ = response.json()["id"]
    deliverer: Deliverer = app.state.deliverer

    async def given_up() -> bool:
        await deliverer.sweep_once()
        body = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
        return body["notifications"][0]["next_attempt_at"] is None

    await eventually(given_up)
    body = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
    assert body["notifications"][0]["status"] == "failed"
    assert body["notifications"][0]["attempts"] == 2
    assert await deliverer.sweep_once() == 0


async def test_a_process_that_dies_after_claiming_loses_no_mail(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
    settings: Settings,
) -> None:
    # Process A: its worker claims the rows and dies before sending them.
    await app.state.worker.stop()
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]
    async with app.state.sessionmaker() as session, session.begin():
        claimed = await outbox.claim(
            session, token="process-a", lease_s=0.3, limit=10, max_attempts=8
        )
    assert len(claimed) == 2
    fetched = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
    assert [n["status"] for n in fetched["notifications"]] == ["sending", "sending"]
    assert smtp_server.inbox.received == []

    # Process B: a fresh service with its sweeper running, on the same database.
    restarted = create_app(settings.model_copy(update={"email_sweeper": True}))
    async with serving(restarted):

        async def all_sent() -> bool:
            return all(row.status == "sent" for row in await outbox_rows(restarted))

        await eventually(all_sent)

    assert sorted(r.rcpt_tos[0] for r in smtp_server.inbox.received) == [CANDIDATE, RECRUITER]
    for row in await outbox_rows(app):
        # The dead process's claim counts as an attempt.
        assert row.attempts == 2
        assert row.claim_token is None


async def test_delete_cancels_unsent_mail_and_erases_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    smtp_server.stop()
    # The test drives the deliverer itself: no retry of the app's worker races the delete.
    await app.state.worker.stop()
    deliverer: Deliverer = app.state.deliverer
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]
    assert await deliverer.sweep_once() == 2
    failed = (await client.get(f"/v1/evaluations/{id_}", headers=auth)).json()
    assert [n["status"] for n in failed["notifications"]] == ["failed", "failed"]

    assert (await client.delete(f"/v1/evaluations/{id_}", headers=auth)).status_code == 204

    smtp_server.start()
    assert await deliverer.sweep_once() == 0
    rows = await outbox_rows(app)
    assert [row.status for row in rows] == ["cancelled", "cancelled"]
    for row in rows:
        assert row.evaluation_id is None
        assert (row.recipient, row.subject, row.text_body, row.html_body) == ("", "", "", None)
        assert row.message_id
    assert smtp_server.inbox.received == []


async def test_delete_after_send_keeps_no_personal_data(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]
    await settle(app)
    await client.delete(f"/v1/evaluations/{id_}", headers=auth)

    rows = await outbox_rows(app)
    assert [row.status for row in rows] == ["sent", "sent"]
    assert {row.recipient for row in rows} == {""}
    assert {row.text_body for row in rows} == {""}


async def test_a_row_claimed_before_a_delete_is_not_sent_after_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test drives the deliverer itself: the app's worker would claim the rows first.
    await app.state.worker.stop()
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    id_ = response.json()["id"]

    original = outbox.still_claimed_ids
    deleted = asyncio.Lock()

    async def delete_commits_meanwhile(
        session: Any, *, message_ids: Sequence[str], token: str
    ) -> set[str]:
        # The sweeper has claimed the rows; the delete commits before it hands them over.
        async with deleted:
            if (await client.get(f"/v1/evaluations/{id_}", headers=auth)).status_code == 200:
                deleted_response = await client.delete(f"/v1/evaluations/{id_}", headers=auth)
                assert deleted_response.status_code == 204
        return await original(session, message_ids=message_ids, token=token)

    monkeypatch.setattr(outbox, "still_claimed_ids", delete_commits_meanwhile)
    deliverer: Deliverer = app.state.deliverer

    async def claimed_something() -> bool:
        return await deliverer.sweep_once() > 0

    await eventually(claimed_something)
    assert smtp_server.inbox.received == []
    assert [row.status for row in await outbox_rows(app)] == ["cancelled", "cancelled"]


async def test_logs_carry_no_mail_content(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    marker = "ZQXMARKER"
    body = interview(
        candidate={"name": f"Jane {marker}", "email": f"{marker.lower()}@example.com"},
        transcript=[
            {
                "question": "When would you not use asyncio?",
                "answer": f"For CPU-bound work the event loop gives nothing; {marker} would use "
                "processes, and keep asyncio for waiting on the network.",
            }
        ],
        notify={"candidate": True, "recruiters": [f"{marker.lower()}.lead@example.com"]},
    )
    caplog.set_level(logging.DEBUG)
    smtp_server.stop()
    created = await client.post("/v1/evaluations", json=body, headers=auth)
    assert created.status_code == 201, created.text
    smtp_server.start()
    deliverer: Deliverer = app.state.deliverer

    async def all_sent() -> bool:
        await deliverer.sweep_once()
        return all(row.status == "sent" for row in await outbox_rows(app))

    await eventually(all_sent)
    await client.get("/v1/evaluations", headers=auth)

    # Left out: the test SMTP server's own log, and aiosqlite's statement log, which
    # configure_logging silences (test_configured_logging_silences_statement_logs).
    ours = [r for r in caplog.records if not r.name.startswith(("mail.log", "aiosqlite"))]
    assert any(r.name == "service.notifications.delivery" for r in ours)
    for record in ours:
        logged = f"{record.getMessage()} {record.__dict__}"
        assert marker not in logged
        assert marker.lower() not in logged


def test_configured_logging_silences_statement_logs() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(level="debug", fmt="json")
        assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("service").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiosqlite").setLevel(logging.NOTSET)


async def test_a_read_is_cached_only_once_its_mails_are_final(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    """The worker changes a mail's status behind the API's cache: a read is kept only when no
    mail of it can change any more, so no cached copy shows a stale status."""
    smtp_server.stop()
    await app.state.worker.stop()
    deliverer: Deliverer = app.state.deliverer
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    url = f"/v1/evaluations/{response.json()['id']}"
    await deliverer.sweep_once()
    reads = [await client.get(url, headers=auth) for _ in "ab"]
    assert [r.headers["x-fastapi-cache"] for r in reads] == ["MISS", "MISS"]
    assert [n["status"] for n in reads[1].json()["notifications"]] == ["failed", "failed"]

    smtp_server.start()

    async def all_sent() -> bool:
        await deliverer.sweep_once()
        return all(row.status == "sent" for row in await outbox_rows(app))

    await eventually(all_sent)
    reads = [await client.get(url, headers=auth) for _ in "ab"]
    assert [r.headers["x-fastapi-cache"] for r in reads] == ["MISS", "HIT"]
    assert [n["status"] for n in reads[1].json()["notifications"]] == ["sent", "sent"]


async def test_an_idempotent_replay_sends_no_new_mail(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
) -> None:
    headers = {**auth, "Idempotency-Key": "mail-once-1"}
    first = await client.post("/v1/evaluations", json=interview(), headers=headers)
    again = await client.post("/v1/evaluations", json=interview(), headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    await settle(app)
    assert len(await outbox_rows(app)) == 2
    assert sorted(r.rcpt_tos[0] for r in smtp_server.inbox.received) == [CANDIDATE, RECRUITER]


@pytest.mark.skipif(
    not postgres_mode(), reason="PostgreSQL pass only: SQLite has no server to stop"
)
async def test_a_database_gone_between_send_and_mark_sends_no_mail_twice(
    stoppable_postgres: Cluster,
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    settings: Settings,
) -> None:
    # Found by the chaos run: PostgreSQL stopped after a round's sends and before their marks;
    # the round failed, its rows were claimed again when the lease expired and every mail of
    # it arrived twice.
    url = with_database(stoppable_postgres.dsn, "postgres", driver="postgresql+asyncpg")
    await asyncio.to_thread(upgrade, url)
    app = create_app(settings.model_copy(update={"database_url": url}))
    # PostgreSQL goes away while the worker's mails are in the SMTP conversation, and comes back.
    smtp_server.inbox.delay_s = 1.0

    async def outage() -> None:
        await asyncio.to_thread(smtp_server.inbox.in_data.wait)
        await asyncio.to_thread(stoppable_postgres.halt)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stoppable_postgres.resume)

    async with serving(app) as running:
        async with running.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="outage")
        outage_task = asyncio.create_task(outage())
        transport = httpx.ASGITransport(app=running)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/v1/evaluations", json=interview(), headers={"X-API-Key": key}
            )
        assert response.status_code == 201
        await outage_task

        async def all_sent() -> bool:
            return all(row.status == "sent" for row in await outbox_rows(running))

        await eventually(all_sent)
        rows = await outbox_rows(running)

    assert [row.status for row in rows] == ["sent", "sent"]
    received = Counter(r.message["Message-ID"] for r in smtp_server.inbox.received)
    assert received == Counter({row.message_id: 1 for row in rows})
