"""The SSRF guard checks the address a delivery connects to: a name is resolved once, every
address is checked, the connection goes to a checked one, and redirects are not followed."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpx
import pytest
import respx
import trustme
from fastapi import FastAPI
from sqlalchemy import select

from service.notifications.outbox import OutboxMessage
from service.webhooks.delivery import WebhookFailed, build_webhook_client, deliver
from service.webhooks.signing import verify
from tests.conftest import Receiver, running_receiver
from tests.jobs.helpers import ASYNC, CHAT, eventually, numbered
from tests.jobs.test_webhooks import GOOD

PUBLIC = "93.184.216.34"
OTHER_PUBLIC = "93.184.216.35"
SECRET = "whsec_test"


def system_resolver_answers(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> list[str]:
    """Make the event loop's resolver (what the guard and httpx's transport both use) answer
    `answers[0]` to the first question, `answers[1]` to the second, and so on (the last one
    from then on); the names asked are returned."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("127.0.0.1", "localhost", b"127.0.0.1"):
            return await real(host, port, *args, **kwargs)
        asked.append(str(host))
        addresses = answers[min(len(asked), len(answers)) - 1]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))
            for address in addresses
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def post(url: str, *, client: httpx.AsyncClient | None = None, **options: Any) -> None:
    own = client is None
    client = client or build_webhook_client()
    try:
        await deliver(
            client,
            url=url,
            body=b'{"type":"evaluation.completed"}',
            secret=SECRET,
            event_type="evaluation.completed",
            delivery_id="d-1",
            timeout_s=5,
            **({"allow_private": False} | options),
        )
    finally:
        if own:
            await client.aclose()


async def test_a_name_that_resolves_public_then_loopback_is_delivered_to_the_public_address(
    upstream: respx.MockRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: checked against a public address, the connection must not resolve the
    name again and reach receiver."""
    public = upstream.post(host=PUBLIC).mock(return_value=httpx.Response(204))
    upstream.route(host="127.0.0.1").pass_through()
    upstream.route(host="rebind.example").pass_through()
    asked = system_resolver_answers(monkeypatch, [[PUBLIC], ["127.0.0.1"]])

    await post(f"http://rebind.example:{receiver.port}/hook")

    assert receiver.deliveries == []
    assert asked == ["rebind.example"]
    (call,) = public.calls
    assert call.request.url.host == PUBLIC
    assert call.request.url.port == receiver.port
    assert call.request.headers["host"] == f"rebind.example:{receiver.port}"
    assert verify(SECRET, call.request.headers["x-scorer-signature"], call.request.content)


@pytest.mark.parametrize(
    "addresses",
    [[PUBLIC, "10.0.0.7"], ["127.0.0.1", PUBLIC], [PUBLIC, "169.254.169.254"], [PUBLIC, "::1"]],
    ids=["public-private", "loopback-public", "public-metadata", "public-ipv6-loopback"],
)
async def test_a_name_resolving_to_any_private_address_is_refused(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    system_resolver_answers(monkeypatch, [addresses])

    with pytest.raises(WebhookFailed) as refused:
        await post("http://mixed.example/hook")

    assert refused.value.permanent
    assert "SCORER_WEBHOOK_ALLOW_PRIVATE" in str(refused.value)
    assert not upstream.calls


async def test_a_submission_whose_callback_resolves_to_a_mix_is_refused(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    app: FastAPI,
    upstream: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system_resolver_answers(monkeypatch, [[PUBLIC, "192.168.0.10"]])

    response = await client.post(
        "/v1/evaluations",
        json=numbered(1, callback_url="http://mixed.example/hook"),
        headers=auth | ASYNC,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "callback_url"
    async with app.state.sessionmaker() as session:
        assert (await session.scalar(select(OutboxMessage))) is None


async def test_the_next_checked_address_is_tried_when_the_first_refuses_connections(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.post(host=PUBLIC).mock(side_effect=httpx.ConnectError("refused"))
    second = upstream.post(host=OTHER_PUBLIC).mock(return_value=httpx.Response(200))
    system_resolver_answers(monkeypatch, [[PUBLIC, OTHER_PUBLIC]])

    await post("http://two.example/hook")

    assert second.call_count == 1
    assert second.calls[0].request.headers["host"] == "two.example"


async def test_a_redirect_to_a_private_address_is_not_followed(
    upstream: respx.MockRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"http://127.0.0.1:{receiver.port}/hook"
    upstream.post(host=PUBLIC).mock(return_value=httpx.Response(307, headers={"Location": target}))
    upstream.route(host="127.0.0.1").pass_through()
    system_resolver_answers(monkeypatch, [[PUBLIC]])

    with pytest.raises(WebhookFailed) as failed:
        await post("http://redirect.example/hook")

    assert "redirects are not followed" in str(failed.value)
    assert receiver.deliveries == []


async def test_https_keeps_the_name_for_sni_and_the_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real TLS server whose certificate names only the host: the pinned connection goes to
    the address and verifies the certificate against the name."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    asked = system_resolver_answers(monkeypatch, [["127.0.0.1"]])
    async with (
        running_receiver(ssl_context=server_context) as receiver,
        build_webhook_client(verify=client_context) as client,
    ):
        await post(f"https://hooks.example:{receiver.port}/hook", client=client, allow_private=True)

    assert asked == ["hooks.example"]
    (delivery,) = receiver.deliveries
    assert delivery.headers["Host"] == f"hooks.example:{receiver.port}"


@pytest.mark.parametrize(
    "settings_overrides", [{"webhook_max_attempts": 1, "job_poll_interval_s": 0.05}]
)
async def test_a_delivery_redirected_to_a_private_address_is_given_up(
    upstream: respx.MockRouter,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    app: FastAPI,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    private = f"http://127.0.0.1:{receiver.port}/hook"
    upstream.post(host=PUBLIC).mock(return_value=httpx.Response(302, headers={"Location": private}))
    upstream.route(host="127.0.0.1").pass_through()
    system_resolver_answers(monkeypatch, [[PUBLIC]])

    response = await client.post(
        "/v1/evaluations",
        json=numbered(1, callback_url="http://hooks.example/hook"),
        headers=auth | ASYNC,
    )
    assert response.status_code == 202

    async def webhook() -> OutboxMessage | None:
        async with app.state.sessionmaker() as session:
            found: OutboxMessage | None = await session.scalar(
                select(OutboxMessage).where(OutboxMessage.channel == "webhook")
            )
            return found

    async def given_up() -> bool:
        row = await webhook()
        return row is not None and row.status == "failed" and row.next_attempt_at is None

    await eventually(given_up)
    row = await webhook()
    assert row is not None
    assert "redirects are not followed" in (row.last_error or "")
    assert row.url == "http://hooks.example/hook"
    assert receiver.deliveries == []
