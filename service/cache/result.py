"""Shared results: a cached value by key, and one computation for identical requests in flight.

Knows nothing of what it caches: the caller gives the key, the computation and the codec
(service/evaluations/cached.py caches scoring results with it). Identical requests in one
process share one task; with Redis, processes share one too, through a lock whose holder
publishes the result and whose expiry frees the waiters if the holder dies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.cache.backend import PREFIX, ResilientBackend
from service.cache.metrics import CACHE_HITS, CACHE_MISSES, COALESCED

T = TypeVar("T")

# A holder refreshes its lock while it computes; a dead holder's lock is gone within this.
LOCK_MS = 5_000
# How long the result of a coalesced request stays readable by the waiters of other processes.
DONE_TTL_S = 60
# Decoded values kept per process (a cache of the cache: decoding is most of a hit's cost).
DECODED_ENTRIES = 1024
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.2


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How values are kept: to bytes, from bytes (None for an unreadable entry: a miss), and
    whether a value may be kept at all."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T | None]
    cacheable: Callable[[T], bool]


class SharedResults(Generic[T]):
    """Values by key in the cache, computed once however many ask at the same time."""

    def __init__(
        self, *, cache: ResilientBackend, codec: Codec[T], ttl_s: int, wait_s: float
    ) -> None:
        self._cache = cache
        self._codec = codec
        self._ttl = ttl_s
        self._wait_s = wait_s + LOCK_MS / 1000
        self._inflight: dict[str, asyncio.Task[tuple[T, bool]]] = {}
        # The last value decoded per key, with the bytes it came from: a repeat whose entry
        # is unchanged is not decoded again (the in-process backend hands back the same bytes).
        self._decoded: dict[str, tuple[bytes, T]] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The value of `key` and whether it came from the cache or another's computation."""
        if key not in self._inflight:
            hit = self._decode_entry(key, await self._cache.get(f"{PREFIX}:result:{key}"))
            if hit is not None:
                CACHE_HITS.inc()
                return hit, True
        task = self._inflight.get(key)
        if task is not None:
            COALESCED.inc()
            value, _ = await asyncio.shield(task)
            return value, True
        task = asyncio.create_task(self._shared(key, compute))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a leader whose client goes away must not cancel its followers' result.
        return await asyncio.shield(task)

    async def forget(self, key: str) -> None:
        """Drop the cached value of `key`."""
        self._decoded.pop(key, None)
        await self._cache.clear(key=f"{PREFIX}:result:{key}")

    async def forget_local(self) -> None:
        """Drop every value held in this process: the decoded copies, and the whole store when
        it is the in-process one."""
        self._decoded.clear()
        if self._cache.kind == "memory":
            await self._cache.clear(namespace=f"{PREFIX}:result:")

    def _decode(self, raw: bytes | None) -> T | None:
        return None if raw is None else self._codec.decode(raw)

    def _decode_entry(self, key: str, raw: bytes | None) -> T | None:
        if raw is None:
            return None
        known = self._decoded.get(key)
        if known is not None and (known[0] is raw or known[0] == raw):
            return known[1]
        value = self._codec.decode(raw)
        if value is not None:
            if len(self._decoded) >= DECODED_ENTRIES:
                self._decoded.clear()
            self._decoded[key] = (raw, value)
        return value

    def _finished(self, key: str, task: asyncio.Task[tuple[T, bool]]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so that a result nobody awaits logs nothing

    async def _shared(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        if self._cache.redis is None:
            return await self._compute_and_store(key, compute), False
        lock, done = f"{PREFIX}:inflight:{key}:lock", f"{PREFIX}:inflight:{key}:done"
        token = uuid.uuid4().hex
        while True:
            acquired = await self._cache.add(lock, token.encode(), LOCK_MS)
            if acquired is None:
                # The cache is down: nobody to share with.
                return await self._compute_and_store(key, compute), False
            if acquired:
                return await self._lead(key, compute, lock=lock, done=done, token=token), False
            shared = await self._wait_for(lock=lock, done=done)
            if shared is not None:
                COALESCED.inc()
                return shared, True
            # The holder failed or died without a result: try to become the holder.

    async def _lead(
        self, key: str, compute: Callable[[], Awaitable[T]], *, lock: str, done: str, token: str
    ) -> T:
        heartbeat = asyncio.create_task(self._hold(lock, token))
        try:
            value = await self._compute_and_store(key, compute)
            # Waiters get the value even when it may not be cached.
            await self._cache.set(done, self._codec.encode(value), DONE_TTL_S)
            return value
        finally:
            heartbeat.cancel()
            await self._cache.release_lock(lock, token)

    async def _hold(self, lock: str, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_MS / 3000)
            await self._cache.extend_lock(lock, token, LOCK_MS)

    async def _wait_for(self, *, lock: str, done: str) -> T | None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._wait_s
        pause = _POLL_FIRST_S
        while loop.time() < give_up_at:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
            value = self._decode(await self._cache.get(done))
            if value is not None:
                return value
            if await self._cache.get(lock) is None:
                # Released or expired: the value may have landed just before.
                return self._decode(await self._cache.get(done))
        return None

    async def _compute_and_store(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        # A miss is counted where the computation runs: requests = hits + coalesced + misses.
        CACHE_MISSES.inc()
        value = await compute()
        if self._codec.cacheable(value):
            await self._cache.set(f"{PREFIX}:result:{key}", self._codec.encode(value), self._ttl)
        return value
