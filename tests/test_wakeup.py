"""The SQLite wake-up: a datagram from the API's writer to each worker's socket."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from service.wakeup import WakeListener, WakeSender, wake_directory

ROOT = Path(__file__).resolve().parent.parent


def test_each_sqlite_file_has_a_short_directory_of_its_own(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 150) / "scorer.db"
    one = wake_directory(make_url(f"sqlite+aiosqlite:///{deep}"))
    other = wake_directory(make_url(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"))

    assert one is not None
    assert other is not None
    assert one != other
    # Room for a socket's name within the ~108 bytes a socket path may have.
    assert len(str(one)) < 80
    assert wake_directory(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert wake_directory(make_url("postgresql+asyncpg://u@h/db")) is None


LISTENER = """
import asyncio, sys
from pathlib import Path
from service.wakeup import WakeListener
async def main():
    woken = asyncio.Event()
    listener = WakeListener(Path(sys.argv[1]), woken)
    listener.start()
    print("listening", flush=True)
    await asyncio.wait_for(woken.wait(), 20)
    listener.stop()
    print("woken", flush=True)
asyncio.run(main())
"""


async def test_a_send_wakes_every_listener(tmp_path: Path) -> None:
    directory = tmp_path / "wake"
    woken = asyncio.Event()
    here = WakeListener(directory, woken)
    here.start()
    # A second worker, in a process of its own: its socket in the same directory.
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTENER, str(directory), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert other.stdout is not None
        assert await other.stdout.readline() == b"listening\n"
        sender = WakeSender(directory)
        sender.send()
        sender.close()
        async with asyncio.timeout(20):
            await woken.wait()
            assert await other.stdout.readline() == b"woken\n"
            assert await other.wait() == 0
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
        here.stop()
    # Each listener removed its socket.
    assert list(directory.iterdir()) == []


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


async def test_dead_workers_sockets_are_removed_and_a_send_to_them_does_not_fail(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "wake"
    directory.mkdir()
    stale = directory / str(_dead_pid())
    stale.write_text("")  # a socket left by a worker killed with SIGKILL
    sender = WakeSender(directory)
    sender.send()  # a file that is not a listening socket: skipped, no error
    sender.close()

    listener = WakeListener(directory, asyncio.Event())
    listener.start()
    try:
        assert not stale.exists()
    finally:
        listener.stop()


@pytest.mark.parametrize("missing", [True, False])
def test_a_send_with_no_worker_is_harmless(tmp_path: Path, missing: bool) -> None:
    directory = tmp_path / "wake"
    if not missing:
        directory.mkdir()
    sender = WakeSender(directory)
    sender.send()
    sender.close()
