"""The cache's part of the lifespan: fastapi-cache2 initialised on this app's backend."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_cache import FastAPICache

from service.cache.backend import PREFIX, ResilientBackend, build_backend
from service.config import Settings


async def open_cache(app: FastAPI, settings: Settings) -> ResilientBackend:
    """Build the backend, hand it to fastapi-cache2, and note whether Redis answers."""
    backend = build_backend(settings)
    # FastAPICache is process-global and ignores a second init: reset it so that a new app
    # (a test, a reload) does not keep the previous app's backend.
    FastAPICache.reset()
    FastAPICache.init(
        backend,
        prefix=PREFIX,
        expire=settings.cache_ttl_s or None,
        enable=settings.cache_ttl_s > 0,
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
