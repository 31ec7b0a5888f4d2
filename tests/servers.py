"""The real `interview-scorer serve` and `simulate` in subprocesses, for what only real
processes show."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


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
