"""The real `interview-scorer serve` and `simulate` in subprocesses, for what only real
processes show."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def metric_processes(directory: Path) -> set[str]:
    """The pids of the processes that wrote metric files in a PROMETHEUS_MULTIPROC_DIR (each
    writes its own from start-up on)."""
    return {p.stem.rsplit("_", 1)[-1] for p in directory.glob("gauge_livesum_*.db")}


@contextmanager
def _running(
    args: Sequence[str], *, health_url: str, workdir: Path, name: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m service ARGS` until the block ends, once `health_url` answers 200."""
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{args[0]} exited with {process.returncode}: {log.name}: "
                    + Path(log.name).read_text()[-2000:]
                )
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not answer {health_url} within 60 s")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass(frozen=True)
class Served:
    """A running `serve`: its base URL and its process."""

    base_url: str
    process: subprocess.Popen[bytes]


@contextmanager
def serving(
    *,
    database_url: str,
    workdir: Path,
    workers: int | None = 1,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`interview-scorer serve` on a free loopback port until the block ends; its base URL."""
    with serve_process(database_url=database_url, workdir=workdir, workers=workers, env=env) as s:
        yield s.base_url


@contextmanager
def serve_process(
    *,
    database_url: str,
    workdir: Path,
    workers: int | None = 1,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Served]:
    """`interview-scorer serve [args]` on a free loopback port until the block ends.

    It runs in `workdir`, so a .env there is read; `workers=None` leaves --workers out."""
    port = free_port()
    environment = {
        **os.environ,
        "SCORER_DATABASE_URL": database_url,
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_EMAIL_DIR": str(workdir / "mail"),
        "SCORER_LOG_LEVEL": "warning",
        **(env or {}),
    }
    base_url = f"http://127.0.0.1:{port}"
    options = [] if workers is None else ["--workers", str(workers)]
    argv = ["serve", "--port", str(port), *options, *args]
    with _running(
        argv,
        health_url=f"{base_url}/healthz",
        workdir=workdir,
        name=f"serve-{port}",
        env=environment,
    ) as process:
        yield Served(base_url, process)


@contextmanager
def simulating(*, workdir: Path) -> Iterator[str]:
    """`interview-scorer simulate` (the LLM and the analyzer, fast) on a free loopback port
    until the block ends; its base URL, the analyzer's (the LLM's is that + /v1)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    args = ["simulate", "--port", str(port), "--llm-latency", "0.05", "--analyzer-latency", "0.02"]
    with _running(
        args,
        health_url=f"{base_url}/healthz",
        workdir=workdir,
        name=f"simulate-{port}",
        env=dict(os.environ),
    ):
        yield base_url


def children(pid: int) -> list[int]:
    """The pids of a process's children (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def command_line(pid: int) -> list[str]:
    """A process's argv, or [] when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


class Process:
    """A command of the service (`python -m service ARGV`, or another module), started, killed
    with SIGKILL and restarted by a test or the chaos run; its output appended to `log`."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, *, module: str = "service"
    ) -> None:
        self.argv = argv
        self.env = env
        self.log = log
        self.module = module
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again)."""
        with self.log.open("ab") as out:
            self.child = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.argv],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def kill(self) -> None:
        """kill -9, and reap it."""
        assert self.child is not None
        self.child.send_signal(signal.SIGKILL)
        self.child.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not gone within 20 s."""
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()


async def healthy(base_url: str, *, within_s: float = 30) -> None:
    """Wait until `base_url`/healthz answers 200 (a bound, not a timing assertion)."""
    async with asyncio.timeout(within_s), httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
