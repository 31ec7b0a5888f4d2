"""The outbox's depth and failed deliveries in /metrics."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import interview
from tests.notifications.conftest import SmtpServer, eventually, outbox_rows
from tests.test_metrics import sample


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


@pytest.mark.usefixtures("scoring")
async def test_outbox_depth_and_failures_follow_an_smtp_outage(
    app: FastAPI,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    smtp_server: SmtpServer,
) -> None:
    before = await scrape(client)
    smtp_server.stop()
    # The test drives the deliverer itself, one round at a time.
    await app.state.worker.stop()
    body = interview(notify={"candidate": True, "recruiters": ["lead@example.com"]})
    assert (await client.post("/v1/evaluations", json=body, headers=auth)).status_code == 201
    queued = await scrape(client)
    assert sample(queued, "scorer_outbox_depth") == 2
    assert sample(queued, "scorer_worker_oldest_unclaimed_age_seconds") > 0

    assert await app.state.deliverer.sweep_once() == 2
    during = await scrape(client)

    failures = sample(during, "scorer_outbox_failures_total") - sample(
        before, "scorer_outbox_failures_total"
    )
    assert failures >= 2
    assert sample(during, "scorer_outbox_depth") == 2

    smtp_server.start()

    async def all_sent() -> bool:
        await app.state.deliverer.sweep_once()
        return all(row.status == "sent" for row in await outbox_rows(app))

    await eventually(all_sent)
    assert sample(await scrape(client), "scorer_outbox_depth") == 0
