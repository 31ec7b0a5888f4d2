"""The sweeper and the claims: concurrent sweepers, graceful shutdown, an outage with a restart."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker, utcnow
from service.main import create_app
from service.notifications import outbox
from service.notifications.delivery import Deliverer
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import build_sender
from service.worker import load_evaluation_facts
from tests.conftest import interview, serving, settle
from tests.notifications.conftest import SmtpServer, eventually, outbox_rows


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    for attempts, low, high in [(1, 5, 10), (2, 10, 20), (3, 20, 40), (10, 50, 100)]:
        delays = {outbox.backoff_delay(attempts, base_s=10, cap_s=100) for _ in range(50)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1


async def _fill(sessionmaker: async_sessionmaker[AsyncSession], count: int) -> set[str]:
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(OutboxMessage))
        rows = [
            OutboxMessage(
                channel="email",
                kind="recruiter_summary",
                recipient=f"r{n}@example.com",
                subject="s",
                text_body="t",
                message_id=f"<{n}@test>",
            )
            for n in range(count)
        ]
        session.add_all(rows)
        await session.flush()
        return {row.id for row in rows}


async def _claims_are_disjoint(settings: Settings) -> None:
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    try:
        ids = await _fill(sessionmaker, 60)

        claimers = 6
        barrier = asyncio.Barrier(claimers)

        async def claimer(n: int) -> list[str]:
            taken: list[str] = []
            async with sessionmaker() as session:
                await session.execute(select(1))  # connected before the race starts
                await session.commit()
                await barrier.wait()
                while True:
                    async with session.begin():
                        rows = await outbox.claim(
                            session, token=f"t{n}-{len(taken)}", lease_s=60, limit=7, max_attempts=8
                        )
                        # Hold the claim's locks a moment, as a slower sweeper would.
                        await asyncio.sleep(0.01)
                    if not rows:
                        return taken
                    taken += [row.id for row in rows]

        results = await asyncio.gather(*(claimer(n) for n in range(claimers)))
        claimed = Counter(id_ for taken in results for id_ in taken)
        assert set(claimed) == ids
        assert set(claimed.values()) == {1}
    finally:
        await engine.dispose()


async def test_concurrent_sweepers_never_claim_a_row_twice_on_sqlite(settings: Settings) -> None:
    await _claims_are_disjoint(settings)


async def test_concurrent_sweepers_never_claim_a_row_twice_on_postgresql(
    settings: Settings, postgres_url: str
) -> None:
    await _claims_are_disjoint(settings.model_copy(update={"database_url": postgres_url}))


async def test_on_postgresql_sweepers_claim_at_the_same_time_without_waiting(
    settings: Settings, postgres_url: str
) -> None:
    """Each sweeper holds its claim's transaction open until all have claimed (a barrier):
    with SKIP LOCKED none waits for another's locks, so all get rows, and different ones.
    Without it the second would block on the first's rows and the barrier never fill."""
    engine = create_engine(settings.model_copy(update={"database_url": postgres_url}))
    sessionmaker = create_sessionmaker(engine)
    try:
        await _fill(sessionmaker, 30)
        claimers = 4
        barrier = asyncio.Barrier(claimers)

        async def claimer(n: int) -> list[str]:
            async with sessionmaker() as session, session.begin():
                rows = await outbox.claim(
                    session, token=f"t{n}", lease_s=60, limit=5, max_attempts=8
                )
                await barrier.wait()
                return [row.id for row in rows]

        async with asyncio.timeout(30):
            results = await asyncio.gather(*(claimer(n) for n in range(claimers)))

        assert [len(taken) for taken in results] == [5] * claimers
        assert len({id_ for taken in results for id_ in taken}) == 5 * claimers
    finally:
        await engine.dispose()


async def test_postgresql_end_to_end(
    settings: Settings,
    postgres_url: str,
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
) -> None:
    app = create_app(settings.model_copy(update={"database_url": postgres_url}))
    async with serving(app):
        async with app.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="pg", scopes=("write", "read", "delete"))
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as client:
            created = await client.post("/v1/evaluations", json=interview(), headers=headers)
            id_ = created.json()["id"]
            await settle(app)
            fetched = await client.get(f"/v1/evaluations/{id_}", headers=headers)
            assert [n["status"] for n in fetched.json()["notifications"]] == ["sent", "sent"]
            deleted = await client.delete(f"/v1/evaluations/{id_}", headers=headers)
            assert deleted.status_code == 204
    assert len(smtp_server.inbox.received) == 2


async def _park(app: FastAPI) -> None:
    """Leave every new mail queued: the app's worker is stopped."""
    await app.state.worker.stop()


async def test_shutdown_lets_a_send_in_flight_finish(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _park(app)
    await client.post("/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth)
    smtp_server.inbox.delay_s = 0.3
    deliverer = Deliverer(
        settings=settings.model_copy(update={"email_sweeper": True, "email_shutdown_grace_s": 10}),
        sessionmaker=app.state.sessionmaker,
        sender=build_sender(settings),
        load_facts=load_evaluation_facts,
    )
    deliverer.start()
    assert await asyncio.to_thread(smtp_server.inbox.in_data.wait, 10)

    await deliverer.stop()

    [row] = await outbox_rows(app)
    assert row.status == "sent"
    assert len(smtp_server.inbox.received) == 1


async def test_shutdown_hands_an_unfinished_send_back_to_the_queue(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    app: FastAPI,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _park(app)
    await client.post("/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth)
    smtp_server.inbox.delay_s = 30
    deliverer = Deliverer(
        settings=settings.model_copy(update={"email_sweeper": True, "email_shutdown_grace_s": 0.1}),
        sessionmaker=app.state.sessionmaker,
        sender=build_sender(settings),
        load_facts=load_evaluation_facts,
    )
    deliverer.start()
    assert await asyncio.to_thread(smtp_server.inbox.in_data.wait, 10)

    await deliverer.stop()

    [row] = await outbox_rows(app)
    # Not claimed forever: back in the queue at once, the interrupted attempt not counted.
    assert (row.status, row.claim_token, row.claimed_until, row.attempts) == (
        "queued",
        None,
        None,
        0,
    )
    smtp_server.inbox.delay_s = 0
    await app.state.deliverer.sweep_once()
    assert (await outbox_rows(app))[0].status == "sent"


async def test_outage_and_restart_lose_no_mail_and_send_none_for_a_deleted_evaluation(
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    settings: Settings,
) -> None:
    """The issue's definition of done, with the sweeper of the lifespan doing the work."""
    running = settings.model_copy(
        update={"email_sweeper": True, "email_max_attempts": 100, "email_shutdown_grace_s": 1}
    )
    smtp_server.stop()
    first = create_app(running)
    ids: list[str] = []
    async with serving(first):
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as client:
            for n in range(3):
                notify = {"candidate": True, "recruiters": [f"lead{n}@example.com", "hr@x.org"]}
                body = interview(notify=notify, candidate={"name": "J", "email": f"c{n}@x.org"})
                response = await client.post("/v1/evaluations", json=body, headers=auth)
                assert response.status_code == 201
                ids.append(response.json()["id"])
            assert (
                await client.delete(f"/v1/evaluations/{ids[2]}", headers=auth)
            ).status_code == 204

        async def retried() -> bool:
            return all(row.attempts >= 2 for row in await outbox_rows(first) if row.evaluation_id)

        await eventually(retried)
    # The service is down: restarted below while the SMTP server is still down, then it is back.
    second = create_app(running)
    async with serving(second):

        async def failing() -> bool:
            rows = await outbox_rows(second)
            return any(row.attempts >= 3 for row in rows if row.evaluation_id)

        await eventually(failing)
        smtp_server.start()

        async def all_sent() -> bool:
            rows = await outbox_rows(second)
            return all(row.status == "sent" for row in rows if row.evaluation_id)

        await eventually(all_sent)

    rows = await outbox_rows(second)
    assert Counter(row.status for row in rows) == {"sent": 6, "cancelled": 3}
    received = Counter(r.message["Message-ID"] for r in smtp_server.inbox.received)
    assert set(received.values()) == {1}
    assert set(received) == {row.message_id for row in rows if row.status == "sent"}
    addressed = sorted(r.rcpt_tos[0] for r in smtp_server.inbox.received)
    assert addressed == sorted(
        ["c0@x.org", "c1@x.org", "lead0@example.com", "lead1@example.com", "hr@x.org", "hr@x.org"]
    )


async def test_a_lease_expired_on_the_last_attempt_is_given_up(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _park(app)
    await client.post("/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth)
    async with app.state.sessionmaker() as session, session.begin():
        # A sender that died while sending the last allowed attempt.
        values: dict[str, Any] = {
            "status": "sending",
            "attempts": settings.email_max_attempts,
            "claim_token": "dead",
            "claimed_until": utcnow(),
        }
        await session.execute(update(OutboxMessage).values(**values))

    assert await app.state.deliverer.sweep_once() == 0

    [row] = await outbox_rows(app)
    assert (row.status, row.next_attempt_at, row.claim_token) == ("failed", None, None)
    assert smtp_server.inbox.received == []


async def test_a_failed_mail_is_not_claimed_again_before_its_backoff(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scoring: respx.MockRouter,
    smtp_server: SmtpServer,
) -> None:
    await _park(app)
    await client.post("/v1/evaluations", json=interview(notify={"candidate": True}), headers=auth)
    slow_retries = settings.model_copy(
        update={"email_backoff_base_s": 600, "email_backoff_cap_s": 600}
    )
    deliverer = Deliverer(
        settings=slow_retries,
        sessionmaker=app.state.sessionmaker,
        sender=build_sender(slow_retries),
        load_facts=load_evaluation_facts,
    )
    smtp_server.stop()
    assert await deliverer.sweep_once() == 1
    [failed] = await outbox_rows(app)
    assert (failed.status, failed.attempts) == ("failed", 1)
    # Equal jitter: at least half of the 600 s.
    assert failed.next_attempt_at is not None
    assert failed.next_attempt_at >= utcnow() + timedelta(seconds=290)
    smtp_server.start()

    # The server is back, but the mail's time has not come: nothing is claimed or sent.
    assert await deliverer.sweep_once() == 0
    assert [(r.status, r.attempts) for r in await outbox_rows(app)] == [("failed", 1)]
    assert smtp_server.inbox.received == []

    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
    assert await deliverer.sweep_once() == 1
    assert [(r.status, r.attempts) for r in await outbox_rows(app)] == [("sent", 2)]
    assert len(smtp_server.inbox.received) == 1
