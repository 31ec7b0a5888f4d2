"""The real `interview-scorer serve` in a subprocess, for what only a real server shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(
    *, database_url: str, workdir: Path, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`interview-scorer serve` on a free loopback port until the block ends; its base URL."""
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
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", str(workers)],
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
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
