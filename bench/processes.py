"""Starting, watching and stopping the benchmark's server processes, all on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    """The resident memory of `pid` in MB (VmRSS); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class MemorySampler:
    """Samples the RSS of a server's API processes in a thread until stopped; keeps the peak of
    the largest (with `--workers 2` the server's own process only supervises its two)."""

    pid: int
    interval_s: float = 0.02
    peak_mb: float = 0.0
    _pids: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._pids = process_tree(self.pid)[0]
        self.peak_mb = self._largest()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _largest(self) -> float:
        return max(rss_mb(pid) for pid in self._pids)

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._largest())


class Processes:
    """The child processes of one run, all stopped on exit, also after Ctrl-C or an error."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        for child in reversed(self.children):
            self.stop(child)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, stdout_pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start `argv`; its stderr (and stdout unless piped) go to logs/<name>.log."""
        log = (self.logs / f"{name}.log").open("ab")
        # Its own session: Ctrl-C reaches only this orchestrator, which stops children in order.
        child = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        """Stop `child`: SIGTERM, then SIGKILL after 15 s."""
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()
        with contextlib.suppress(ValueError):
            self.children.remove(child)


def wait_healthy(url: str, child: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> None:
    """Wait until `url` answers 200, or fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args!r} exited with status {child.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def python() -> str:
    """This interpreter, so children run in the same virtualenv."""
    return sys.executable


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _is_worker(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"service" in argv and b"worker" in argv


def process_tree(pid: int) -> tuple[list[int], list[int]]:
    """The API processes of a server (itself and its descendants) and its worker processes
    (`interview-scorer worker` and theirs), as pids."""
    api: list[int] = []
    workers: list[int] = []
    stack = [(pid, False)]
    while stack:
        current, in_worker = stack.pop()
        in_worker = in_worker or _is_worker(current)
        (workers if in_worker else api).append(current)
        stack.extend((child, in_worker) for child in _children(current))
    return api, workers


def split_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of a server's API processes and of its worker processes."""
    api, workers = process_tree(pid)
    return sum(cpu_seconds(p) for p in api), sum(cpu_seconds(p) for p in workers)
