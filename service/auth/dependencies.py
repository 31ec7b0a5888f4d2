"""The API key check of every protected endpoint, and the process's short cache of keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.limits import KeyLimits
from service.auth.models import ApiKey
from service.auth.service import find_active_key_by_hash, hash_key
from service.errors import AuthenticationError, PermissionDenied

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

# How a key is sent, as the OpenAPI document declares it (service/openapi.py adds it to every
# operation that can answer 401). The dependency reads the headers itself: FastAPI's security
# classes as sub-dependencies cost a tenth of a cached request's CPU (bench/profile.py).
SECURITY_SCHEMES = {
    "HTTPBearer": {
        "type": "http",
        "description": "`Authorization: Bearer <key>`",
        "scheme": "bearer",
    },
    "APIKeyHeader": {
        "type": "apiKey",
        "description": "`X-API-Key: <key>`",
        "in": "header",
        "name": "X-API-Key",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]

# Published by `api-keys revoke` when Redis is configured: every process drops the key at once.
REVOCATIONS_CHANNEL = "scorer:api-keys:revoked"
# Unknown keys are not remembered; known ones are, up to this many (then the cache starts over).
MAX_ENTRIES = 10_000


class KeyCache:
    """Verified keys by hash, trusted for `ttl_s` seconds: the lookup is not repeated per request.

    A revoked key keeps working in a process for at most `ttl_s` (SCORER_API_KEY_CACHE_S), or
    not at all where Redis carries the revocation. Unknown keys are never cached: a key made a
    moment ago works at once.
    """

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], ttl_s: float) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, ApiKey]] = {}
        # One lookup per key at a time: the requests that arrive while it runs (a thousand at
        # once when the entry expires under load) share it instead of each asking the database.
        self._lookups: dict[str, asyncio.Future[ApiKey | None]] = {}
        # Bumped by every forget(): a lookup that began before a revocation is not kept.
        self._generation = 0
        self._listener: asyncio.Task[None] | None = None

    async def find(self, key: str) -> ApiKey | None:
        """The unrevoked key matching `key`, or None."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(digest))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        # Shielded: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(lookup)

    async def _look_up(self, digest: str) -> ApiKey | None:
        generation = self._generation
        # Its own short session: no connection is held from here through the upstream calls.
        async with self._sessionmaker() as session:
            row = await find_active_key_by_hash(session, digest=digest)
        if row is None:
            self._entries.pop(digest, None)
        elif self._ttl_s > 0 and generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self._ttl_s, row)
        return row

    def forget(self, key_id: str | None = None) -> None:
        """Drop the key with this id (every key when None)."""
        self._generation += 1
        if key_id is None:
            self._entries.clear()
            return
        for digest, (_, row) in list(self._entries.items()):
            if row.id == key_id:
                del self._entries[digest]

    def listen(self, redis: Redis) -> None:
        """Drop revoked keys as Redis announces them."""
        self._listener = asyncio.create_task(self._listen(redis), name="api-key-revocations")

    async def close(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self, redis: Redis) -> None:
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(REVOCATIONS_CHANNEL)
                    # Subscribed anew after an outage: what was revoked meanwhile is unknown.
                    self.forget()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message.get("data")
                            self.forget(data.decode() if isinstance(data, bytes) else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("revocation listener failed", extra={"error": type(exc).__name__})
                self.forget()
                await asyncio.sleep(1)


def _presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>`, else from `X-API-Key`."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return headers.get("x-api-key") or None


async def authenticate(request: Request, scope: str) -> ApiKey:
    """The caller's key, if it has `scope`; else 401 (no key, an unknown or revoked one), 403,
    or 429 when the key is over a per-key limit (service/auth/limits.py)."""
    key = _presented_key(request)
    if not key:
        raise AuthenticationError("An API key is required (Authorization: Bearer or X-API-Key).")
    keys: KeyCache = request.app.state.keys
    api_key = await keys.find(key)
    if api_key is None:
        raise AuthenticationError("The API key is unknown or revoked.")
    if scope not in api_key.scope_set:
        raise PermissionDenied(f"The API key lacks the '{scope}' scope.")
    limits: KeyLimits | None = request.app.state.limits
    if limits is not None:
        limits.admit(api_key.id, request.scope)
    return api_key


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that returns the caller's key, or fails as `authenticate` does."""

    async def dependency(request: Request) -> ApiKey:
        return await authenticate(request, scope)

    return dependency


WriteKey = Annotated[ApiKey, Depends(require_scope("write"))]
ReadKey = Annotated[ApiKey, Depends(require_scope("read"))]
DeleteKey = Annotated[ApiKey, Depends(require_scope("delete"))]
