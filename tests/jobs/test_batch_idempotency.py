"""POST /v1/evaluation-batches takes an Idempotency-Key as POST /v1/evaluations does: a retry
gets the first answer and queues nothing more."""

from __future__ import annotations

import json

import httpx
import respx
from fastapi import FastAPI
from sqlalchemy import func, select

from service.batches.models import EvaluationBatch
from tests.conftest import KeyMaker
from tests.jobs.helpers import ASYNC, CHAT, evaluations, numbered
from tests.jobs.test_webhooks import GOOD

BATCHES = "/v1/evaluation-batches"


async def batch_count(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(EvaluationBatch)) or 0)


async def test_a_repeated_batch_is_answered_once_and_queued_once(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    body = {"items": [numbered(0), numbered(1)]}
    key = {"Idempotency-Key": "batch-7"}

    first = await client.post(BATCHES, json=body, headers=auth | key)
    again = await client.post(BATCHES, json=body, headers=auth | key)
    # The same body, formatted otherwise and its members in another order.
    reordered = await client.post(
        BATCHES,
        content=json.dumps(body, indent=2, sort_keys=True),
        headers=auth | key | {"Content-Type": "application/json"},
    )

    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    for repeat in (again, reordered):
        assert repeat.status_code == 202
        assert repeat.headers["idempotent-replayed"] == "true"
        assert repeat.headers["location"] == first.headers["location"]
        assert repeat.content == first.content
    assert await batch_count(app) == 1
    assert len(await evaluations(app)) == 2


async def test_the_same_key_with_another_body_or_on_another_endpoint_is_422(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    key = {"Idempotency-Key": "shared"}
    first = await client.post(BATCHES, json={"items": [numbered(0)]}, headers=auth | key)

    other_body = await client.post(BATCHES, json={"items": [numbered(1)]}, headers=auth | key)
    other_endpoint = await client.post(
        "/v1/evaluations", json=numbered(0), headers=auth | key | ASYNC
    )

    assert first.status_code == 202
    for refused in (other_body, other_endpoint):
        assert refused.status_code == 422
        assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert await batch_count(app) == 1
    assert len(await evaluations(app)) == 1


async def test_keys_are_scoped_to_the_api_key(
    client: httpx.AsyncClient, make_key: KeyMaker, upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    key = {"Idempotency-Key": "mine"}
    body = {"items": [numbered(0)]}

    one = await client.post(BATCHES, json=body, headers=await make_key() | key)
    two = await client.post(BATCHES, json=body, headers=await make_key() | key)

    assert one.headers["location"] != two.headers["location"]
    assert await batch_count(app) == 2
