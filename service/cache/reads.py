"""The cached read endpoints: keys per caller's scopes, invalidated by generation.

Every cached read key embeds a generation token: one per evaluation, one for the list.
Writing or erasing an evaluation replaces the tokens after the commit, so every entry
written before is unreachable at once, on every replica, without scanning for keys; old
entries simply expire. A missing token is replaced by a new one, never by a default, so an
evicted token cannot resurrect old entries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi_cache.decorator import cache
from fastapi_cache.types import KeyBuilder
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.cache.backend import PREFIX, READS_PREFIX, ResilientBackend
from service.cache.result import CachedScorer
from service.evaluations import repository
from service.evaluations import service as evaluation_service
from service.evaluations.schemas import EvaluationCreate
from service.evaluations.scorer import Scorer

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

LIST_GENERATION = f"{PREFIX}:gen:evaluations"


def _evaluation_generation(evaluation_id: str) -> str:
    return f"{PREFIX}:gen:evaluation:{evaluation_id}"


def get_cache(request: Request) -> ResilientBackend:
    """The process's cache backend."""
    backend: ResilientBackend = request.app.state.cache
    return backend


async def _cache_dependency(request: Request) -> ResilientBackend:
    # async: a sync dependency would cost a trip through FastAPI's thread pool per request.
    return get_cache(request)


CacheDep = Annotated[ResilientBackend, Depends(_cache_dependency)]


async def _generation(backend: ResilientBackend, key: str, *, ttl_s: int) -> str:
    raw = await backend.get(key)
    if raw is None:
        token = uuid.uuid4().hex.encode()
        added = await backend.add(key, token, ttl_s * 1000)
        raw = token if added else await backend.get(key)
    # With the cache down, a fresh token: the entry can be neither found nor kept.
    return raw.decode() if raw is not None else uuid.uuid4().hex


def _variant(request: Request, kwargs: dict[str, Any]) -> str:
    # What the response may depend on: path, query and the scopes of the caller's key.
    scopes = sorted(
        scope for value in kwargs.values() if isinstance(value, ApiKey) for scope in value.scope_set
    )
    material = [request.url.path, sorted(request.query_params.multi_items()), scopes]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:32]


def _key_builder(generation_of: Callable[[dict[str, Any]], str]) -> KeyBuilder:
    async def build(
        func: Callable[..., Any],
        namespace: str = "",
        *,
        request: Request | None = None,
        response: Response | None = None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        assert request is not None
        backend = get_cache(request)
        generation = await _generation(backend, generation_of(kwargs), ttl_s=backend.ttl_s)
        return f"{namespace}:{generation}:{_variant(request, kwargs)}"

    return build


evaluation_key = _key_builder(lambda kwargs: _evaluation_generation(kwargs["evaluation_id"]))
list_key = _key_builder(lambda kwargs: LIST_GENERATION)


def cached_read(*, name: str, key_builder: KeyBuilder) -> Callable[[F], F]:
    """fastapi-cache2's decorator, telling HTTP caches to revalidate every time.

    The library answers `Cache-Control: max-age=<ttl>`, which would let a browser or proxy
    keep showing an evaluation after it was erased.
    """

    def decorate(func: F) -> F:
        inner = cache(namespace=f"{READS_PREFIX}:{name}", key_builder=key_builder)(func)

        @functools.wraps(inner)
        async def outer(*args: Any, **kwargs: Any) -> Any:
            result = await inner(*args, **kwargs)
            for value in (*kwargs.values(), result):
                if isinstance(value, Response):
                    value.headers["Cache-Control"] = "private, no-cache"
            return result

        return outer  # type: ignore[return-value]

    return decorate


async def invalidate_reads(backend: ResilientBackend, *, evaluation_id: str | None) -> None:
    """Make cached reads of the list, and of one evaluation, unreachable."""
    ttl_s = max(1, backend.ttl_s)
    await backend.invalidate(LIST_GENERATION, uuid.uuid4().hex.encode(), ttl_s)
    if evaluation_id is not None:
        await backend.invalidate(
            _evaluation_generation(evaluation_id), uuid.uuid4().hex.encode(), ttl_s
        )


async def commit_then_invalidate(
    session: AsyncSession, backend: ResilientBackend, *, evaluation_id: str | None
) -> None:
    """Commit a change to an evaluation, then make cached reads of it unreachable.

    In this order: a reader between an invalidation and the commit would cache the old
    state again under the new generation.
    """
    await session.commit()
    await invalidate_reads(backend, evaluation_id=evaluation_id)


async def erase_evaluation(
    session: AsyncSession, *, evaluation_id: str, scorer: Scorer, backend: ResilientBackend
) -> None:
    """Erase an evaluation, then every cache entry derived from it; 404 if there is none.

    Idempotency records of the evaluation go with it (ON DELETE CASCADE).
    """
    evaluation = await repository.get_evaluation(session, evaluation_id)
    request = evaluation.request if evaluation is not None else None
    await evaluation_service.delete_evaluation(session, evaluation_id=evaluation_id)
    await commit_then_invalidate(session, backend, evaluation_id=evaluation_id)
    if request is not None and isinstance(scorer, CachedScorer):
        try:
            payload = EvaluationCreate.model_validate(request)
        except ValidationError:
            return  # stored by an older schema: its result key cannot be rebuilt
        await scorer.forget(payload)
