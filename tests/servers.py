"""The real `interview-scorer serve` in a subprocess, for what only a real server shows."""

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
    log = (workdir / f"serve-{port}.log").open("wb")
    options = [] if workers is None else ["--workers", str(workers)]
    argv = ["serve", "--port", str(port), *options, *args]
    process = subprocess.Popen(
        [sys.executable, "-m", "service", *argv],
        cwd=workdir,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {process.returncode}: {log.name}: "
                    + Path(log.name).read_text()[-2000:]
                )
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield Served(base_url, process)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
