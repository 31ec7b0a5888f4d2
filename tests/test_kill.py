"""Killed and restarted: the API and the worker as real processes, each killed with SIGKILL.

The API (`serve --no-worker`) and the worker (`interview-scorer worker`) run as the deployment
runs them, against the simulators, on this run's database. Interviews keep arriving while the
worker is killed in the middle of its deliveries and restarted, then while the API is killed and
restarted. Afterwards every request that was answered 201 is readable with the same scores, and
every mail of every stored evaluation was delivered exactly once: the file backend writes one
file per Message-ID (a delivery cut off after its write and retried writes the same file again,
the way a receiving server deduplicates by Message-ID), and no file exists for anything else.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.devtools.simulator import SimulatorConfig, start_simulator
from service.notifications.outbox import OutboxMessage
from tests.conftest import interview
from tests.servers import Process, free_port, healthy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


async def _score(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response | None:
    try:
        return await client.post("/v1/evaluations", json=body)
    except httpx.TransportError:
        return None  # cut off by the kill: not answered, so nothing was promised


async def test_kill_9_of_the_worker_and_the_api_loses_and_doubles_nothing(
    database_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    engine = create_engine(
        Settings(_env_file=None, database_url=database_url, llm_provider="simulated")
    )
    sessions = create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        _, key = await create_api_key(session, name="kill")
    runner, sim_port = await start_simulator(SimulatorConfig(0.05, 0.02))
    simulator = f"http://127.0.0.1:{sim_port}"
    mail = tmp_path / "mail"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCORER_")},
        "PYTHONPATH": str(ROOT),
        "SCORER_DATABASE_URL": database_url,
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_LLM_BASE_URL": f"{simulator}/v1",
        "SCORER_PORTFOLIO_ANALYZER_URL": simulator,
        "SCORER_EMAIL_BACKEND": "file",
        "SCORER_EMAIL_DIR": str(mail),
        "SCORER_LOG_LEVEL": "warning",
        # A claim cut off by the kill is taken up again after this.
        "SCORER_EMAIL_LEASE_S": "3",
        # Small rounds, so that the kills fall between a claim and its mark.
        "SCORER_EMAIL_SWEEP_BATCH": "5",
    }
    api = Process(
        ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "api.log",
    )
    worker = Process(["worker"], env, tmp_path / "worker.log")
    processes.extend([api, worker])
    api.start()
    worker.start()
    answered: dict[str, dict[str, Any]] = {}
    try:
        await healthy(base_url)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=30
        ) as client:

            async def wave(tag: str, count: int) -> None:
                bodies = [
                    interview(position={"title": f"Engineer {tag}-{i}"}) for i in range(count)
                ]
                for response in await asyncio.gather(*(_score(client, b) for b in bodies)):
                    if response is not None and response.status_code == 201:
                        answered[response.json()["id"]] = response.json()

            # The worker is killed twice while it delivers, and restarted each time.
            for round_ in range(2):
                await wave(f"w{round_}", 60)
                worker.kill()
                await wave(f"w{round_}-down", 20)
                worker.start()
                await asyncio.sleep(0.3)
            # The API is killed with requests in flight, and restarted.
            in_flight = asyncio.create_task(wave("api", 80))
            await asyncio.sleep(0.15)
            api.kill()
            await in_flight
            api.start()
            await healthy(base_url)
            await wave("after", 40)

            # Everything queued is delivered within a bound (leases of the killed: 3 s).
            async with asyncio.timeout(120):
                while True:
                    async with sessions() as session:
                        rows = list(await session.scalars(select(OutboxMessage)))
                    if rows and all(r.status == "sent" for r in rows):
                        break
                    await asyncio.sleep(0.2)
            readback = {
                id_: (await client.get(f"/v1/evaluations/{id_}")).json() for id_ in answered
            }
    finally:
        await runner.cleanup()
        await engine.dispose()

    assert len(answered) >= 200
    # Every 201 is readable, with the scores it was answered with.
    for id_, first in answered.items():
        again = readback[id_]
        assert again["id"] == id_
        for field in ("overall_score", "recommendation", "criteria", "portfolio", "created_at"):
            assert again[field] == first[field]
        assert [n["status"] for n in again["notifications"]] == ["sent", "sent"]
    # Every stored evaluation's mails: one file each, named by its Message-ID, none else.
    stored = {r.message_id: r for r in rows}
    evaluations = {r.evaluation_id for r in rows}
    assert set(answered) <= evaluations
    files = {p.name: p for p in mail.glob("*.eml")}
    assert len(files) == len(stored) == 2 * len(evaluations)
    for message_id, row in stored.items():
        name = message_id.strip("<>").replace("<", "_").replace(">", "_") + ".eml"
        parsed = BytesParser(policy=default).parsebytes(files[name].read_bytes())
        assert parsed["Message-ID"] == message_id
        assert parsed["To"] == row.recipient
