"""The background worker as a process: `serve` starts one and restarts it, `--no-worker` leaves
the work queued for a worker run on its own, and the heartbeat a container's health check reads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text

from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.devtools.simulator import SimulatorConfig, start_simulator
from service.wakeup import wake_directory
from tests.conftest import interview
from tests.servers import children, command_line, serve_process

ROOT = Path(__file__).resolve().parent.parent
NOTIFY = {"candidate": True, "recruiters": ["lead@example.com"]}


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    runner, port = await start_simulator(SimulatorConfig(0.01, 0.01))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def api_key(database_url: str) -> str:
    engine = create_engine(
        Settings(_env_file=None, database_url=database_url, llm_provider="simulated")
    )
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, key = await create_api_key(session, name="worker-test")
    finally:
        await engine.dispose()
    return key


def _env(database_url: str, simulator: str, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCORER_")},
        "PYTHONPATH": str(ROOT),
        "SCORER_DATABASE_URL": database_url,
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_LLM_BASE_URL": f"{simulator}/v1",
        "SCORER_PORTFOLIO_ANALYZER_URL": simulator,
        "SCORER_EMAIL_BACKEND": "file",
        "SCORER_EMAIL_DIR": str(tmp_path / "mail"),
        "SCORER_LOG_LEVEL": "warning",
        "SCORER_WORKER_HEARTBEAT_FILE": str(tmp_path / "worker.alive"),
    }


def _workers(serve_pid: int) -> list[int]:
    return [pid for pid in children(serve_pid) if "worker" in command_line(pid)]


async def _until(check: Any, *, within_s: float = 30) -> None:
    """Wait until `check()` holds (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while not check():  # noqa: ASYNC110 (a process or a file to watch: no event)
            await asyncio.sleep(0.05)


def _niceness(pid: int) -> int:
    # /proc/PID/stat: the 19th field; the command (2nd) may hold spaces, so count from its end.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def _mails(tmp_path: Path) -> int:
    return len(list((tmp_path / "mail").glob("*.eml")))


async def _score(base_url: str, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}) as client:
        response = await client.post("/v1/evaluations", json=interview(notify=NOTIFY))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env, cwd=ROOT)


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "worker", "--check", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_serve_starts_a_worker_and_restarts_it_when_it_dies(
    database_url: str, simulator: str, api_key: str, tmp_path: Path
) -> None:
    env = _env(database_url, simulator, tmp_path)
    with serve_process(database_url=database_url, workdir=tmp_path, env=env) as served:
        await _until(lambda: len(_workers(served.process.pid)) == 1)
        [first] = _workers(served.process.pid)
        # It yields the CPU to the API: under full load the answers go first.
        assert _niceness(first) == _niceness(served.process.pid) + 10
        await _score(served.base_url, api_key)
        await _until(lambda: _mails(tmp_path) == 2)
        # The mail may go out in the worker's first round, before its watcher's first beat.
        await _until((tmp_path / "worker.alive").exists)
        assert _check(env).returncode == 0

        os.kill(first, signal.SIGKILL)
        await _until(lambda: _workers(served.process.pid) not in ([], [first]))
        [second] = _workers(served.process.pid)
        assert second != first
        await _score(served.base_url, api_key)
        await _until(lambda: _mails(tmp_path) == 4)

    # serve took its worker with it.
    await _until(lambda: command_line(second) == [] or "worker" not in command_line(second))


async def test_no_worker_leaves_the_mail_queued_for_a_worker_run_on_its_own(
    database_url: str, simulator: str, api_key: str, tmp_path: Path
) -> None:
    env = _env(database_url, simulator, tmp_path)
    with serve_process(
        database_url=database_url, workdir=tmp_path, env=env, args=["--no-worker"]
    ) as served:
        assert _workers(served.process.pid) == []
        await _score(served.base_url, api_key)
        async with httpx.AsyncClient(base_url=served.base_url) as client:
            ready = (await client.get("/readyz")).json()
        assert ready["worker"]["messages"] == 2
        assert _mails(tmp_path) == 0
        assert _check(env).returncode == 1

        worker = _start_worker(env)
        try:
            await _until(lambda: _mails(tmp_path) == 2)
            await _until(lambda: _check(env).returncode == 0)
            async with httpx.AsyncClient(base_url=served.base_url) as client:
                ready = (await client.get("/readyz")).json()
            assert ready["worker"] == {
                "messages": 0,
                "evaluations": 0,
                "oldest_unclaimed_age_s": 0.0,
            }
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            # The heartbeat stops with the worker: within a bound, the check says so.
            async with asyncio.timeout(30):
                stale = await asyncio.to_thread(_check, env, "--max-age", "0.5")
                while stale.returncode == 0:
                    stale = await asyncio.to_thread(_check, env, "--max-age", "0.5")
            assert stale.returncode == 1
            assert "no worker heartbeat within 0.5 s" in stale.stderr
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


async def test_a_worker_on_its_own_is_woken_by_each_commit_of_the_api(
    database_url: str, simulator: str, api_key: str, tmp_path: Path
) -> None:
    """No poll and no sweep within the test's bound: only the wake-up of the API's commit (a
    datagram on SQLite, NOTIFY on PostgreSQL) can get the mail out in time."""
    env = _env(database_url, simulator, tmp_path)
    del env["SCORER_WORKER_HEARTBEAT_FILE"]
    env.update(SCORER_WORKER_POLL_S="60", SCORER_EMAIL_SWEEP_INTERVAL_S="60")
    worker = _start_worker(env)
    try:
        with serve_process(
            database_url=database_url, workdir=tmp_path, env=env, args=["--no-worker"]
        ) as served:
            # Started, and past its first sweep (the recovery of what it finds at start).
            async with asyncio.timeout(30):
                while not await _listening(database_url):  # noqa: ASYNC110 (a process to watch)
                    await asyncio.sleep(0.05)
            for round_ in (1, 2):
                await _score(served.base_url, api_key)
                await _until(lambda round_=round_: _mails(tmp_path) == 2 * round_, within_s=15)
    finally:
        worker.terminate()
        worker.wait(30)


async def _listening(database_url: str) -> bool:
    """Whether a worker of this database is ready to be woken (SQLite: its socket exists;
    PostgreSQL: a connection LISTENs)."""
    directory = wake_directory(make_url(database_url))
    if directory is not None:
        return directory.is_dir() and any(directory.iterdir())
    engine = create_engine(
        Settings(_env_file=None, database_url=database_url, llm_provider="simulated")
    )
    try:
        async with engine.connect() as connection:
            listening = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
            )
    finally:
        await engine.dispose()
    return bool(listening)


def test_check_without_a_heartbeat_file_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    env.update(PYTHONPATH=str(ROOT), SCORER_LLM_PROVIDER="simulated")

    result = _check(env)

    assert result.returncode == 2
    assert "SCORER_WORKER_HEARTBEAT_FILE" in result.stderr
