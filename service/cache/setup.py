"""The cache's part of the lifespan: fastapi-cache2 initialised on this app's backend."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi_cache import FastAPICache

from service.cache.backend import PREFIX, ResilientBackend, build_backend
from service.config import Settings

logger = logging.getLogger(__name__)


async def open_cache(app: FastAPI, settings: Settings) -> ResilientBackend:
    """Build the backend, hand it to fastapi-cache2, and note whether Redis answers."""
    backend = build_backend(settings)
    # Cached reads in one worker's memory would outlive a DELETE served by another worker.
    reads_cached = settings.cache_ttl_s > 0 and (backend.kind == "redis" or settings.workers == 1)
    if not reads_cached and settings.cache_ttl_s > 0:
        logger.warning("several workers without SCORER_REDIS_URL: reads are not cached")
    # FastAPICache is process-global and ignores a second init: reset it so that a new app
    # (a test, a reload) does not keep the previous app's backend.
    FastAPICache.reset()
    FastAPICache.init(
        backend,
        prefix=PREFIX,
        expire=settings.cache_ttl_s or None,
        enable=reads_cached,
    )
    app.state.cache = backend
    # A Redis that is down at start is an outage like any other: logged, served uncached.
    await backend.ping()
    return backend


async def close_cache(app: FastAPI) -> None:
    """Close the backend, and forget it in fastapi-cache2 unless another app replaced it."""
    backend: ResilientBackend = app.state.cache
    if FastAPICache._backend is backend:
        FastAPICache.reset()
    await backend.close()
