"""Cached reads: the bytes of an answer, kept under a key that a write makes unreachable.

Every cached read key embeds a generation token: one per evaluation, one per tenant's list;
and a variant that names the caller's tenant, so that no key of one tenant can reach an entry
made for another.
Writing or erasing an evaluation replaces the tokens after the commit, so every entry
written before is unreachable at once, on every replica that shares Redis, without scanning
for keys; old entries simply expire. A missing token is replaced by a new one, never by a
default, so an evicted token cannot resurrect old entries.

Only a final view is cached: an evaluation that is completed or failed and whose mails are all
sent, cancelled or given up (and a page of such evaluations). What the worker process changes
(a job's outcome, a mail's status) is never final before it changes, so no cached copy can go
stale behind the API's back, and the worker needs no way to reach the API's cache.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from service.cache.backend import PREFIX, READS_PREFIX, ResilientBackend


def _list_generation(tenant: str) -> str:
    return f"{PREFIX}:gen:evaluations:{tenant}"


def _evaluation_generation(evaluation_id: str) -> str:
    return f"{PREFIX}:gen:evaluation:{evaluation_id}"


async def _generation(backend: ResilientBackend, key: str, *, ttl_s: int) -> str:
    raw = await backend.get(key)
    if raw is None:
        token = uuid.uuid4().hex.encode()
        added = await backend.add(key, token, ttl_s * 1000)
        raw = token if added else await backend.get(key)
    # With the cache down, a fresh token: the entry can be neither found nor kept.
    return raw.decode() if raw is not None else uuid.uuid4().hex


def _variant(parts: Iterable[str]) -> str:
    # What the answer may depend on besides the generation: the path and query, the caller.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


async def evaluation_read_key(
    backend: ResilientBackend, *, evaluation_id: str, variant: Iterable[str]
) -> str:
    """The cache key of one evaluation's read, for this variant of the request."""
    generation = await _generation(
        backend, _evaluation_generation(evaluation_id), ttl_s=backend.ttl_s
    )
    return f"{PREFIX}:{READS_PREFIX}:evaluation:{generation}:{_variant(variant)}"


async def list_read_key(backend: ResilientBackend, *, tenant: str, variant: Iterable[str]) -> str:
    """The cache key of a page of the tenant's list, for this variant of the request."""
    generation = await _generation(backend, _list_generation(tenant), ttl_s=backend.ttl_s)
    return f"{PREFIX}:{READS_PREFIX}:evaluations:{generation}:{_variant(variant)}"


async def invalidate_reads(
    backend: ResilientBackend, *, tenant: str, evaluation_id: str | None
) -> None:
    """Make cached reads of the tenant's list, and of one evaluation, unreachable."""
    ttl_s = max(1, backend.ttl_s)
    await backend.invalidate(_list_generation(tenant), uuid.uuid4().hex.encode(), ttl_s)
    if evaluation_id is not None:
        await backend.invalidate(
            _evaluation_generation(evaluation_id), uuid.uuid4().hex.encode(), ttl_s
        )


async def commit_then_invalidate(
    session: AsyncSession, backend: ResilientBackend, *, tenant: str, evaluation_id: str | None
) -> None:
    """Commit a change to an evaluation, then make cached reads of it unreachable.

    In this order: a reader between an invalidation and the commit would cache the old
    state again under the new generation.
    """
    await session.commit()
    await invalidate_reads(backend, tenant=tenant, evaluation_id=evaluation_id)
