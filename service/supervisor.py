"""`serve`'s background worker: one child process, restarted when it dies, stopped with serve."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Restarts wait this long, doubling while the worker keeps dying at once, up to the cap.
RESTART_FIRST_S = 0.5
RESTART_CAP_S = 30.0
# A worker that ran this long was healthy: its next death restarts it after the first delay.
HEALTHY_AFTER_S = 30.0
STOP_GRACE_S = 30.0


def _child_setup(niceness: int) -> Callable[[], None]:
    def setup() -> None:
        # In the child, before exec. If serve dies, even by SIGKILL, the kernel sends the
        # worker SIGTERM (Linux), so no worker outlives its API. And the worker yields the CPU
        # to the API processes beside it: what it does can wait for the answers, which cannot;
        # it catches up when they leave it room (a scheduler's share, never starvation).
        import ctypes
        import sys

        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if niceness:
            os.nice(niceness)

    return setup


class WorkerSupervisor:
    """Runs `argv` in a thread's care: started now, restarted after each exit until stopped."""

    def __init__(self, argv: list[str], *, niceness: int = 0) -> None:
        self._argv = argv
        self._setup = _child_setup(niceness)
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        """Start the worker and watch it."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after a grace period) and stop watching."""
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import time

        delay = RESTART_FIRST_S
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self._child = subprocess.Popen(  # noqa: S603 (our own command)
                    self._argv, preexec_fn=self._setup
                )
                child = self._child
            started = time.monotonic()
            code = child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                delay = RESTART_FIRST_S
            logger.error(
                "background worker exited; restarting",
                extra={"exit_code": code, "restart_in_s": delay},
            )
            self.restarts += 1
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_CAP_S)
