"""fastapi-cache2's backend: Redis or in-process, behind a wrapper that survives an outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from fastapi_cache.types import Backend

from service.config import Settings

if TYPE_CHECKING:
    # redis-py, and fastapi-cache2's backends package (which imports it), are loaded only
    # where SCORER_REDIS_URL is set: 8 MB of every process's memory otherwise.
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Far enough to mean "no expiry" for the in-process store, which has no such notion.
_FOREVER_S = 10 * 365 * 86400
# While Redis is down, calls skip it for this long instead of each paying a failed connect.
RETRY_AFTER_S = 1.0
PREFIX = "scorer"
# Connections to Redis per process.
REDIS_MAX_CONNECTIONS = 100
READS_PREFIX = "reads"


@dataclass(slots=True)
class Value:
    """A stored entry: its bytes and when it expires (epoch seconds)."""

    data: bytes
    ttl_ts: int


class MemoryBackend(Backend):
    """The in-process backend: a store per instance, an atomic add, and a bound on its size.

    In place of fastapi-cache2's InMemoryBackend, which keeps its store and lock on the class,
    so two apps (or two tests) in one process would share entries; takes `expire=None` for
    "expire now"; and only ever grows (an entry goes when it is read after its expiry): every
    distinct interview's result stayed for SCORER_CACHE_TTL_S, a day. Here the entries are kept
    within `max_bytes` (keys and values), the least recently used going first.
    """

    def __init__(self, *, max_bytes: int) -> None:
        self._store: OrderedDict[str, Value] = OrderedDict()
        self._lock = asyncio.Lock()
        self._max_bytes = max_bytes
        self._bytes = 0

    @property
    def _now(self) -> int:
        return int(time.time())

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        """The seconds `key` has left and its value; (0, None) when absent or expired."""
        async with self._lock:
            value = self._get(key)
            return (value.ttl_ts - self._now, value.data) if value is not None else (0, None)

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, None when absent or expired."""
        async with self._lock:
            value = self._get(key)
            return value.data if value is not None else None

    def _get(self, key: str) -> Value | None:
        value = self._store.get(key)
        if value is None:
            return None
        if value.ttl_ts < self._now:
            self._drop(key)
            return None
        self._store.move_to_end(key)
        return value

    def _put(self, key: str, value: Value) -> None:
        self._drop(key)
        self._store[key] = value
        self._bytes += len(key) + len(value.data)
        while self._bytes > self._max_bytes and self._store:
            self._drop(next(iter(self._store)))

    def _drop(self, key: str) -> None:
        value = self._store.pop(key, None)
        if value is not None:
            self._bytes -= len(key) + len(value.data)

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        """Store `value` for `expire` seconds (for good when None)."""
        async with self._lock:
            self._put(key, Value(value, self._now + (expire or _FOREVER_S)))

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        """Remove one key, or every key starting with `namespace`; how many went."""
        async with self._lock:
            if namespace:
                doomed = [k for k in self._store if k.startswith(namespace)]
            else:
                doomed = [key] if key is not None and key in self._store else []
            for k in doomed:
                self._drop(k)
            return len(doomed)

    async def add(self, key: str, value: bytes, expire: int) -> bool:
        """Store `value` unless the key exists; whether it was stored."""
        async with self._lock:
            if self._get(key) is not None:
                return False
            self._put(key, Value(value, self._now + expire))
            return True


class ResilientBackend(Backend):
    """Every cache call goes through here: a failing Redis is a miss, never an error.

    The first failure of an outage is logged; later calls skip Redis for RETRY_AFTER_S at a
    time, so an outage costs no connect per request. The first success logs the recovery.
    """

    def __init__(self, *, redis: Redis | None, ttl_s: int, memory_bytes: int = 64 << 20) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._inner: Backend
        # What a failing Redis raises; the in-process store raises none of them.
        self._failures: tuple[type[Exception], ...] = (OSError, TimeoutError)
        if redis is None:
            self._inner = MemoryBackend(max_bytes=memory_bytes)
        else:
            from fastapi_cache.backends.redis import RedisBackend
            from redis.exceptions import RedisError

            self._inner = RedisBackend(redis)
            self._failures = (RedisError, OSError, TimeoutError)
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lost_invalidation = False
        self._pending_clears: list[tuple[str | None, str | None]] = []

    @property
    def kind(self) -> Literal["redis", "memory"]:
        """Which store backs the cache."""
        return "redis" if self.redis is not None else "memory"

    @property
    def is_down(self) -> bool:
        """Whether the last call to Redis failed."""
        return self._down_since is not None

    async def _call(self, op: Callable[[], Awaitable[T]], default: T, *, writes: bool) -> T:
        if self._down_since is not None and not await self._probe():
            if writes:
                self._lost_invalidation = True
            return default
        try:
            return await op()
        except self._failures as exc:
            self._failed(exc, lost_invalidation=writes)
            return default

    async def _probe(self) -> bool:
        # During an outage: at most one probe per RETRY_AFTER_S, and on success the missed
        # erasures are redone before anything is read from Redis again.
        if time.monotonic() < self._retry_at or self.redis is None:
            return False
        try:
            await _ping(self.redis)
        except self._failures as exc:
            self._failed(exc, lost_invalidation=False)
            return False
        await self._recovered()
        return True

    def _failed(self, exc: BaseException, *, lost_invalidation: bool) -> None:
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        self._lost_invalidation = self._lost_invalidation or lost_invalidation
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "cache unavailable; scoring continues uncached",
                extra={"error_type": type(exc).__name__},
            )

    async def _recovered(self) -> None:
        down_for = time.monotonic() - (self._down_since or time.monotonic())
        self._down_since = None
        logger.info("cache available again", extra={"down_s": round(down_for, 1)})
        # The pool's idle connections still point at the Redis that went away: without
        # retries, the next command on one of them would fail and start a new outage.
        if self.redis is not None:
            await self.redis.connection_pool.disconnect(inuse_connections=False)
        # Erasures during the outage could not reach Redis: redo them before anything is
        # served from it, so that a deleted evaluation cannot come back with Redis. Cached
        # reads are keyed by generations whose bump was lost, so they all go.
        pending, self._pending_clears = self._pending_clears, []
        for namespace, key in pending:
            await self.clear(namespace, key)
        if self._lost_invalidation:
            self._lost_invalidation = False
            await self.clear_prefix(READS_PREFIX)

    async def ping(self) -> bool:
        """Whether the cache answers; always tries Redis, so readiness sees a recovery."""
        if self.redis is None:
            return True
        redis = self.redis
        self._retry_at = 0.0
        return await self._call(lambda: _ping(redis), False, writes=False)

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        """The value and its remaining seconds, or (0, None)."""
        return await self._call(lambda: self._inner.get_with_ttl(key), (0, None), writes=False)

    async def get(self, key: str) -> bytes | None:
        """The value, or None."""
        return await self._call(lambda: self._inner.get(key), None, writes=False)

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        """Store a value; lost when the cache is down."""
        await self._call(lambda: self._inner.set(key, value, expire), None, writes=False)

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        """Remove a key or a namespace; a removal that fails is redone on recovery."""
        removed = await self._call(lambda: self._inner.clear(namespace, key), None, writes=False)
        if removed is None:
            self._pending_clears.append((namespace, key))
            return 0
        return removed

    async def invalidate(self, key: str, value: bytes, expire: int) -> None:
        """Overwrite a key that readers depend on; a failure is made up for on recovery."""
        await self._call(lambda: self._inner.set(key, value, expire), None, writes=True)

    async def add(self, key: str, value: bytes, expire_ms: int) -> bool | None:
        """Store unless present (SET NX): whether stored, or None when the cache is down."""
        if self.redis is None:
            assert isinstance(self._inner, MemoryBackend)
            return await self._inner.add(key, value, max(1, expire_ms // 1000))
        redis = self.redis
        return await self._call(lambda: _set_nx(redis, key, value, expire_ms), None, writes=False)

    async def delete(self, key: str) -> None:
        """Remove a key that nothing depends on for correctness."""
        await self._call(lambda: self._inner.clear(None, key), 0, writes=False)

    async def extend_lock(self, key: str, token: str, expire_ms: int) -> bool:
        """Push a lock's expiry back if `token` still holds it."""
        if self.redis is None:
            return False
        redis = self.redis
        return await self._call(
            lambda: _eval_bool(redis, _EXTEND, key, token, expire_ms), False, writes=False
        )

    async def release_lock(self, key: str, token: str) -> None:
        """Remove a lock if `token` still holds it."""
        if self.redis is None:
            await self.delete(key)
            return
        redis = self.redis
        await self._call(lambda: _eval_bool(redis, _RELEASE, key, token), False, writes=False)

    async def clear_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix` (rare: an erasure missed during an outage)."""
        full = f"{PREFIX}:{prefix}"
        if self.redis is None:
            await self.clear(namespace=full)
            return
        redis = self.redis
        # SCAN rather than the backend's KEYS, which blocks Redis on a large keyspace.
        await self._call(lambda: _scan_delete(redis, f"{full}:*"), None, writes=True)

    async def close(self) -> None:
        """Close the Redis connections."""
        if self.redis is not None:
            await self.redis.aclose()


async def _ping(redis: Redis) -> bool:
    return bool(await redis.ping())


async def _set_nx(redis: Redis, key: str, value: bytes, expire_ms: int) -> bool:
    return bool(await redis.set(key, value, nx=True, px=expire_ms))


# Compare-and-act, so that a holder whose lock expired cannot touch its successor's.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


async def _eval_bool(redis: Redis, script: str, key: str, *args: str | int) -> bool:
    return bool(await redis.eval(script, 1, key, *args))


async def _scan_delete(redis: Redis, pattern: str) -> None:
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch.clear()
    if batch:
        await redis.delete(*batch)


def build_backend(settings: Settings) -> ResilientBackend:
    """Redis when SCORER_REDIS_URL is set, the in-process store otherwise."""
    if not settings.redis_url:
        return ResilientBackend(
            redis=None, ttl_s=settings.cache_ttl_s, memory_bytes=settings.cache_memory_mb << 20
        )
    # A caller beyond the pool's connections waits for one (a Redis call takes well under a
    # millisecond) instead of failing: redis-py's default pool raises at 100 in use, and under
    # 200 requests in flight that read as an outage: every request went uncached for a second
    # and /readyz said degraded, with Redis idle (found by the chaos run).
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        # The wrapper decides what an outage means; redis-py's own retries would only make
        # every request wait longer for the same answer.
        retry=Retry(NoBackoff(), 0),
    )
    redis = Redis.from_pool(pool)
    return ResilientBackend(redis=redis, ttl_s=settings.cache_ttl_s)
