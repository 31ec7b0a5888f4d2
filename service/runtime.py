"""Process-wide tuning, applied once when a process's lifespan starts (an API process or a worker).

The garbage collector: with a thousand requests in flight, each allocating its parsed body, its
prompt and its answer, Python's default threshold (a young-generation collection every 700
allocations) ran collections that walked every live request's objects: a quarter of a fresh
request's CPU and two fifths of a cached one's (bench/, `make bench`). Almost all of those
objects are freed by reference counting the moment a request ends; the collector is only for
cycles. So young collections run every SCORER_GC_GEN0_THRESHOLD allocations instead, and what
start-up built (modules, the app, its clients) is frozen out of every collection.
"""

from __future__ import annotations

import gc

_tuned = False


def tune_gc(gen0_threshold: int) -> None:
    """Collect young objects every `gen0_threshold` allocations, after freezing what exists
    now; once per process (0 keeps Python's defaults)."""
    global _tuned
    if _tuned or gen0_threshold <= 0:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
