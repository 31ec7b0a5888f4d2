"""The cache's part of a process's start: the backend (fastapi-cache2's Redis or in-process
backend behind ResilientBackend), and whether reads may be cached."""

from __future__ import annotations

import logging

from service.cache.backend import ResilientBackend, build_backend
from service.config import Settings

logger = logging.getLogger(__name__)


def build_cache(settings: Settings) -> ResilientBackend:
    """The process's cache backend: Redis when SCORER_REDIS_URL is set, in-process otherwise."""
    return build_backend(settings)


async def open_cache(settings: Settings) -> tuple[ResilientBackend, bool]:
    """The API process's backend, and whether its reads are cached; notes whether Redis answers.

    Several API processes without Redis do not cache reads: one process's copy would outlive
    a DELETE served by another."""
    backend = build_cache(settings)
    reads_cached = settings.cache_ttl_s > 0 and (backend.kind == "redis" or settings.workers == 1)
    if not reads_cached and settings.cache_ttl_s > 0:
        logger.warning("several workers without SCORER_REDIS_URL: reads are not cached")
    # A Redis that is down at start is an outage like any other: logged, served uncached.
    await backend.ping()
    return backend, reads_cached
