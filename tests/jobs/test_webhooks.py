"""Webhooks: signed deliveries through the outbox, retries, and the SSRF guard."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select

from service.auth.models import ApiKey
from service.auth.service import create_api_key
from service.cli import main
from service.config import Settings
from service.main import create_app
from service.migrate import upgrade
from service.notifications.outbox import OutboxMessage
from service.webhooks.signing import signature_header, verify
from tests.conftest import Receiver, completion, scores_content, serving, settle
from tests.databases import Cluster, postgres_mode, with_database
from tests.jobs.helpers import ASYNC, CHAT, eventually, numbered

GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))
FAST_RETRIES = {
    "webhook_allow_private": True,
    "job_poll_interval_s": 0.05,
    "webhook_backoff_base_s": 0.01,
    "webhook_backoff_cap_s": 0.02,
}


async def secret_of(app: FastAPI) -> str:
    """The webhook secret of the (only) API key."""
    async with app.state.sessionmaker() as session:
        secret = await session.scalar(select(ApiKey.webhook_secret))
    assert secret is not None
    return str(secret)


async def webhook_rows(app: FastAPI) -> list[OutboxMessage]:
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.channel == "webhook")
        )
        return list(rows)


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES])
async def test_a_finished_evaluation_posts_a_signed_webhook(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    body = numbered(1, callback_url=receiver.url)

    response = await client.post("/v1/evaluations", json=body, headers=auth | ASYNC)
    assert response.status_code == 202

    async def arrived() -> bool:
        return len(receiver.deliveries) == 1

    await eventually(arrived)
    delivery = receiver.deliveries[0]
    secret = await secret_of(app)
    signature = delivery.headers["X-Scorer-Signature"]
    assert verify(secret, signature, delivery.body)
    assert signature.startswith(f"t={delivery.headers['X-Scorer-Timestamp']},v1=")
    assert not verify(secret, signature, delivery.body.replace(b"completed", b"failed"))
    assert not verify("whsec_other", signature, delivery.body)
    assert delivery.headers["X-Scorer-Event"] == "evaluation.completed"
    event = delivery.event
    assert event["type"] == "evaluation.completed"
    assert event["id"] == delivery.headers["X-Scorer-Delivery"]
    assert event["data"]["id"] == response.json()["id"]
    assert event["data"]["href"] == response.headers["location"]
    assert event["data"]["recommendation"] == "hire"
    # No personal data in the body: the receiver fetches the evaluation with its key.
    assert "Candidate 1" not in delivery.body.decode()
    assert "c1@example.com" not in delivery.body.decode()

    async def recorded() -> bool:
        return [r.status for r in await webhook_rows(app)] == ["sent"]

    await eventually(recorded)


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES])
async def test_a_finished_batch_posts_one_signed_webhook(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    bad = numbered(2)
    bad["transcript"] = []
    items = [numbered(0), numbered(1), bad]

    response = await client.post(
        "/v1/evaluation-batches", json={"items": items, "callback_url": receiver.url}, headers=auth
    )
    assert response.status_code == 202

    async def arrived() -> bool:
        return len(receiver.deliveries) == 1

    await eventually(arrived)
    delivery = receiver.deliveries[0]
    assert verify(await secret_of(app), delivery.headers["X-Scorer-Signature"], delivery.body)
    event = delivery.event
    assert event["type"] == "batch.completed"
    assert event["data"]["id"] == response.json()["id"]
    assert event["data"]["counts"] == {"pending": 0, "completed": 2, "failed": 0, "invalid": 1}
    assert event["data"]["href"] == response.headers["location"]
    # Once the worker has done all that is due, still one: one row was queued, and it is sent.
    await settle(app)
    assert len(receiver.deliveries) == 1
    assert [row.status for row in await webhook_rows(app)] == ["sent"]


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES])
async def test_a_failing_receiver_is_retried_until_it_accepts(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    receiver.failures = [500, 503]

    await client.post(
        "/v1/evaluations", json=numbered(1, callback_url=receiver.url), headers=auth | ASYNC
    )

    async def sent() -> bool:
        return [r.status for r in await webhook_rows(app)] == ["sent"]

    await eventually(sent)
    assert len(receiver.deliveries) == 3
    assert len({d.headers["X-Scorer-Delivery"] for d in receiver.deliveries}) == 1
    secret = await secret_of(app)
    assert all(verify(secret, d.headers["X-Scorer-Signature"], d.body) for d in receiver.deliveries)
    (row,) = await webhook_rows(app)
    assert row.attempts == 3


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES | {"webhook_max_attempts": 2}])
async def test_a_receiver_that_keeps_failing_is_given_up(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    receiver.failures = [500] * 10

    await client.post(
        "/v1/evaluations", json=numbered(1, callback_url=receiver.url), headers=auth | ASYNC
    )

    async def given_up() -> bool:
        rows = await webhook_rows(app)
        return bool(rows) and rows[0].status == "failed" and rows[0].next_attempt_at is None

    await eventually(given_up)
    assert len(receiver.deliveries) == 2
    (row,) = await webhook_rows(app)
    assert row.last_error == "the receiver answered 500"


REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_callbacks_to_private_addresses_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str], url: str, app: FastAPI
) -> None:
    response = await client.post(
        "/v1/evaluations", json=numbered(1, callback_url=url), headers=auth | ASYNC
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "callback_url"
    assert "SCORER_WEBHOOK_ALLOW_PRIVATE" in problem["detail"]
    assert url.split("/")[2] not in problem["detail"]
    async with app.state.sessionmaker() as session:
        assert (await session.scalar(select(OutboxMessage))) is None


async def test_only_http_callbacks_are_accepted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for url in ("ftp://example.com/hook", "file:///etc/passwd", "http://" + "a" * 320 + ".com"):
        response = await client.post(
            "/v1/evaluations", json=numbered(1, callback_url=url), headers=auth | ASYNC
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "callback_url"


async def test_a_batch_refuses_a_private_callback_and_flags_an_item_with_one(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    refused = await client.post(
        "/v1/evaluation-batches",
        json={"items": [numbered(0)], "callback_url": "http://127.0.0.1/hook"},
        headers=auth,
    )
    accepted = await client.post(
        "/v1/evaluation-batches",
        json={"items": [numbered(0), numbered(1, callback_url="http://10.1.1.1/")]},
        headers=auth,
    )

    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "callback_url"
    assert accepted.status_code == 202
    item = accepted.json()["items"][1]
    assert item["status"] == "invalid"
    assert item["error"]["errors"][0]["field"] == "callback_url"


async def test_the_target_is_checked_again_at_delivery(
    settings: Settings, upstream: respx.MockRouter, receiver: Receiver
) -> None:
    """Accepted while private targets were allowed, delivered by a process where they are
    not: the delivery is refused and given up, and the receiver gets nothing."""
    upstream.post(CHAT).mock(return_value=GOOD)
    lenient = create_app(settings.model_copy(update=FAST_RETRIES | {"job_concurrency": 1}))
    async with serving(lenient):
        await lenient.state.job_runner.stop()  # accept only; the next process scores it
        async with lenient.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="test")
        transport = httpx.ASGITransport(app=lenient)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            response = await c.post(
                "/v1/evaluations",
                json=numbered(1, callback_url=receiver.url),
                headers={"Authorization": f"Bearer {key}"} | ASYNC,
            )
            assert response.status_code == 202

    strict = create_app(settings.model_copy(update={"job_poll_interval_s": 0.05}))
    async with serving(strict):

        async def given_up() -> bool:
            rows = await webhook_rows(strict)
            return bool(rows) and rows[0].status == "failed"

        await eventually(given_up)
        (row,) = await webhook_rows(strict)
    assert row.next_attempt_at is None
    assert "SCORER_WEBHOOK_ALLOW_PRIVATE" in (row.last_error or "")
    assert receiver.deliveries == []


def test_a_receiver_can_verify_a_signature_and_refuse_a_replay() -> None:
    body = b'{"type":"evaluation.completed"}'
    header = signature_header("whsec_test", 1_700_000_000, body)

    assert verify("whsec_test", header, body, now=1_700_000_100)
    assert not verify("whsec_test", header, body, now=1_700_000_000 + 301)
    assert not verify("whsec_test", header, body + b" ", now=1_700_000_100)
    assert not verify("whsec_test", "v1=abc", body, now=1_700_000_100)


def test_the_cli_shows_the_webhook_secret(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCORER_DATABASE_URL", database_url)

    assert main(["api-keys", "create", "frontend"]) == 0
    created = capsys.readouterr().out
    key = created.strip().splitlines()[-1]
    secret = created.split("webhook signing secret: ")[1].split()[0]
    assert secret.startswith("whsec_")
    assert main(["api-keys", "webhook-secret", key[:10]]) == 0
    assert capsys.readouterr().out.strip() == secret
    assert main(["api-keys", "webhook-secret", "nope"]) == 1


async def test_an_async_evaluation_sends_its_follow_up_emails_when_it_completes(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    settings: Settings,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    body = numbered(1)
    body["notify"] = {"candidate": True, "recruiters": ["lead@example.com"]}

    response = await client.post("/v1/evaluations", json=body, headers=auth | ASYNC)
    assert response.json()["notifications"] == []

    async def sent() -> bool:
        polled = (await client.get(response.headers["location"], headers=auth)).json()
        statuses = [n["status"] for n in polled["notifications"]]
        return polled["status"] == "completed" and statuses == ["sent", "sent"]

    await eventually(sent)
    assert len(list(settings.email_dir.glob("*.eml"))) == 2


@pytest.mark.skipif(not postgres_mode(), reason="stops a PostgreSQL cluster: the PostgreSQL pass")
async def test_a_database_gone_between_delivery_and_mark_delivers_no_webhook_twice(
    stoppable_postgres: Cluster, settings: Settings, upstream: respx.MockRouter, receiver: Receiver
) -> None:
    """The receiver has the webhook; the database is gone before the worker can mark it sent.
    The mark waits for the database rather than failing the round, whose row would otherwise be
    claimed and delivered again when its lease expired."""
    upstream.post(CHAT).mock(return_value=GOOD)
    url = with_database(stoppable_postgres.dsn, "postgres", driver="postgresql+asyncpg")
    await asyncio.to_thread(upgrade, url)
    app = create_app(settings.model_copy(update={**FAST_RETRIES, "database_url": url}))
    receiver.hold = asyncio.Event()
    async with serving(app) as running:
        async with running.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="outage")
        transport = httpx.ASGITransport(app=running)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/v1/evaluations",
                json=numbered(1, callback_url=receiver.url),
                headers={"X-API-Key": key} | ASYNC,
            )
        assert response.status_code == 202
        async with asyncio.timeout(30):
            await receiver.arrived.wait()
        await asyncio.to_thread(stoppable_postgres.halt)
        receiver.hold.set()  # delivered; its mark now meets no database
        await asyncio.sleep(1.0)  # the outage's length, not a wait for an outcome
        await asyncio.to_thread(stoppable_postgres.resume)

        async def marked() -> bool:
            rows = await webhook_rows(running)
            return [row.status for row in rows] == ["sent"]

        await eventually(marked)

    assert len(receiver.deliveries) == 1
