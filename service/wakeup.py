"""Waking the workers when an API process commits work for them, on SQLite.

On PostgreSQL the writer's transaction NOTIFYs and the workers LISTEN (service/writer.py,
service/worker.py). SQLite has no such thing, but with SQLite every process that writes the
database is on the same host, so a datagram does: each worker binds a Unix datagram socket in a
directory named after the database file, and after a commit that stored work the API sends one
byte to every socket there. A send costs microseconds and never waits (a full or vanished
socket is skipped: the worker's own poll, SCORER_WORKER_POLL_S, is the fallback). Without the
wake-up a worker could only poll, and polling every 50 ms to notice work within 100 ms cost an
idle worker 5% of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

# The sockets of a directory are listed again at most this often.
_RELIST_S = 1.0


def wake_directory(url: URL) -> Path | None:
    """Where the workers of this SQLite database listen; None for other databases and for an
    in-memory one. A short path under the temporary directory (a socket's path may not exceed
    about a hundred bytes), named after the database file's absolute path."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = str(Path(url.database).resolve())
    digest = hashlib.sha256(database.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"interview-scorer-wake-{digest}"


class WakeSender:
    """The API side: one byte to every worker's socket after a commit that stored work."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._targets: list[str] = []
        self._listed_at = float("-inf")

    def send(self) -> None:
        """Wake every worker listening now (never blocks, never raises)."""
        now = time.monotonic()
        if now - self._listed_at > _RELIST_S:
            self._listed_at = now
            try:
                self._targets = [str(p) for p in self._directory.iterdir()]
            except OSError:
                self._targets = []
        for target in self._targets:
            try:
                self._socket.sendto(b"w", target)
            except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
                # Already woken and not yet reading, or gone (a dead worker's socket: the
                # worker that binds a new one removes nothing of others'; the list is renewed).
                continue
            except OSError as exc:
                logger.debug("wake-up not sent", extra={"error_type": type(exc).__name__})

    def close(self) -> None:
        """Close the sending socket."""
        self._socket.close()


class WakeListener:
    """The worker side: a socket of its own in the directory; `woken` is set by each datagram."""

    def __init__(self, directory: Path, woken: asyncio.Event) -> None:
        self._directory = directory
        self._woken = woken
        self._socket: socket.socket | None = None
        self._path: Path | None = None

    def start(self) -> None:
        """Bind and listen (a failure leaves the worker to its poll, with a warning)."""
        try:
            self._directory.mkdir(mode=0o700, exist_ok=True)
            self._remove_dead_sockets()
            path = self._directory / f"{os.getpid()}"
            path.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(path))
        except OSError as exc:
            logger.warning("no wake-up socket", extra={"error_type": type(exc).__name__})
            return
        self._socket, self._path = sock, path
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(BlockingIOError):
            while self._socket.recv(64):
                pass
        self._woken.set()

    def _remove_dead_sockets(self) -> None:
        # Named by pid: a socket whose process is gone only costs senders a refused send.
        for path in self._directory.iterdir():
            if path.name.isdigit() and not _alive(int(path.name)):
                path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._socket is None:
            return
        asyncio.get_running_loop().remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
