"""The process-wide garbage-collector tuning, checked in a fresh interpreter (it is global)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc
from service.runtime import tune_gc
default = gc.get_threshold()
tune_gc(0)
assert gc.get_threshold() == default and gc.get_freeze_count() == 0
kept = [object() for _ in range(1000)]
tune_gc(12345)
assert gc.get_threshold() == (12345, *default[1:]), gc.get_threshold()
assert gc.get_freeze_count() >= 1000
tune_gc(99)  # once per process
assert gc.get_threshold()[0] == 12345
print("ok")
"""


def test_tuning_raises_the_young_threshold_and_freezes_what_exists_once() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
