"""Every webhook the worker sends is what the OpenAPI document's `webhooks` section declares:
its body validates against the event's schema, and its headers are the declared ones."""

from __future__ import annotations

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.webhooks.signing import verify
from tests.conftest import Receiver
from tests.contract.documented import document, violations, webhook_body
from tests.jobs.helpers import ASYNC, CHAT, eventually, numbered
from tests.jobs.test_webhooks import FAST_RETRIES, GOOD, secret_of


async def delivered(receiver: Receiver, count: int = 1) -> None:
    async def arrived() -> bool:
        return len(receiver.deliveries) == count

    await eventually(arrived)


def declared_headers(event: str) -> set[str]:
    parameters = document()["webhooks"][event]["post"]["parameters"]
    return {p["name"] for p in parameters if p["in"] == "header" and p["required"]}


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES])
@pytest.mark.parametrize(
    ("llm", "event"),
    [
        (GOOD, "evaluation.completed"),
        (httpx.Response(400, json={"error": {"message": "bad model"}}), "evaluation.failed"),
    ],
    ids=["completed", "failed"],
)
async def test_an_evaluations_webhook_is_as_declared(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
    app: FastAPI,
    llm: httpx.Response,
    event: str,
) -> None:
    upstream.post(CHAT).mock(return_value=llm)

    response = await client.post(
        "/v1/evaluations", json=numbered(1, callback_url=receiver.url), headers=auth | ASYNC
    )
    await delivered(receiver)

    (delivery,) = receiver.deliveries
    assert delivery.event["type"] == event
    assert delivery.event["data"]["id"] == response.json()["id"]
    assert violations(delivery.event, webhook_body(event)) == []
    assert declared_headers(event) <= set(delivery.headers)
    assert delivery.headers["X-Scorer-Event"] == event
    assert verify(await secret_of(app), delivery.headers["X-Scorer-Signature"], delivery.body)


@pytest.mark.parametrize("settings_overrides", [FAST_RETRIES])
async def test_a_batchs_webhook_is_as_declared(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    receiver: Receiver,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)

    response = await client.post(
        "/v1/evaluation-batches",
        json={"items": [numbered(0), numbered(1)], "callback_url": receiver.url},
        headers=auth,
    )
    await delivered(receiver)

    (delivery,) = receiver.deliveries
    assert delivery.event["data"]["id"] == response.json()["id"]
    assert violations(delivery.event, webhook_body("batch.completed")) == []
    assert declared_headers("batch.completed") <= set(delivery.headers)
