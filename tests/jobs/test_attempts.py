"""A background evaluation that keeps failing stops after SCORER_JOB_MAX_ATTEMPTS attempts: it is
failed with its last reason, its batch and webhook follow as for any failure, /metrics counts it,
and no worker claims it again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.jobs import repository
from service.jobs import runner as runner_module
from service.jobs.runner import JobRunner
from tests.conftest import settle
from tests.jobs.helpers import ASYNC, CHAT, evaluations, eventually, numbered
from tests.jobs.test_webhooks import GOOD
from tests.test_metrics import metrics, sample

GIVEN_UP = "scorer_jobs_given_up_total"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"job_lease_s": 0.3, "job_max_attempts": 3, "job_poll_interval_s": 0.05}


async def test_a_job_that_keeps_failing_is_given_up_with_its_reason(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)

    async def breaks(*_args: Any, **_kwargs: Any) -> int | None:
        raise RuntimeError("a message that may quote the interview")

    # Scored (the first time; from the result cache after), and its outcome never recorded.
    monkeypatch.setattr(runner_module, "finish_evaluation", breaks)
    before = sample(await metrics(client), GIVEN_UP)

    created = await client.post("/v1/evaluations", json=numbered(1), headers=auth | ASYNC)
    url = created.headers["location"]

    async def failed() -> bool:
        status: str = (await client.get(url, headers=auth)).json()["status"]
        return status == "failed"

    await eventually(failed)
    await settle(app)
    view = (await client.get(url, headers=auth)).json()

    attempts = [r for r in caplog.records if r.getMessage() == "evaluation job failed"]
    assert len(attempts) == 3
    error = view["error"]
    assert error["type"].endswith("/attempts-exhausted")
    assert error["status"] == 500
    assert "attempted 3 times" in error["detail"]
    assert "RuntimeError" in error["detail"]
    assert "interview" not in error["detail"]
    assert sample(await metrics(client), GIVEN_UP) == before + 1
    (row,) = await evaluations(app)
    assert (row.attempts, row.claimed_by, row.claimed_until) == (3, None, None)


async def test_a_job_whose_workers_keep_dying_is_given_up_and_its_batch_completes(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    llm = upstream.post(CHAT).mock(return_value=GOOD)
    runner: JobRunner = app.state.job_runner
    await runner.stop()  # the workers below die, one after the other
    created = await client.post(
        "/v1/evaluation-batches", json={"items": [numbered(0)]}, headers=auth
    )
    for attempt in range(3):
        async with app.state.sessionmaker() as session, session.begin():
            claimed = await repository.claim(
                session, worker_id=f"dead-{attempt}", lease_s=0, limit=10, max_attempts=3
            )
        assert len(claimed) == 1  # claimed, and its lease lapses with its worker

    runner.start()

    async def batch_completed() -> bool:
        read = await client.get(created.headers["location"], headers=auth)
        status: str = read.json()["status"]
        return status == "completed"

    await eventually(batch_completed)
    batch = (await client.get(created.headers["location"], headers=auth)).json()
    assert batch["counts"]["failed"] == 1
    view = (await client.get(batch["items"][0]["href"], headers=auth)).json()
    assert "lease expired" in view["error"]["detail"]
    assert llm.call_count == 0


async def test_a_stopped_worker_hands_its_job_back_without_spending_an_attempt(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    runner: JobRunner = app.state.job_runner
    await runner.stop()
    await client.post("/v1/evaluations", json=numbered(1), headers=auth | ASYNC)
    async with app.state.sessionmaker() as session, session.begin():
        await repository.claim(session, worker_id="stopping", lease_s=60, limit=1, max_attempts=3)
    async with app.state.sessionmaker() as session, session.begin():
        assert await repository.release(session, worker_id="stopping") == 1

    (row,) = await evaluations(app)
    assert row.attempts == 0
    runner.start()
    await settle(app)
    (row,) = await evaluations(app)
    assert (row.status, row.attempts) == ("completed", 1)
