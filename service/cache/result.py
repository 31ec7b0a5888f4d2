"""The scoring-result cache, and the coalescing of identical requests in flight."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

from pydantic import ValidationError

from service.cache.backend import PREFIX, ResilientBackend
from service.cache.metrics import CACHE_HITS, CACHE_MISSES, COALESCED
from service.config import Settings
from service.evaluations.schemas import EvaluationCreate
from service.evaluations.scorer import Scorer, ScoringResult
from service.llm.client import LLMClient
from service.llm.prompts import PROMPT_VERSION
from service.portfolio.client import PortfolioAnalyzer

# A holder refreshes its lock while it scores; a dead holder's lock is gone within this.
LOCK_MS = 5_000
# How long the result of a coalesced request stays readable by the waiters of other processes.
DONE_TTL_S = 60
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.2


def result_key(payload: EvaluationCreate, settings: Settings) -> str:
    """A hash of everything that determines a scoring result; never the candidate's identity."""
    material = {
        "position": payload.position.model_dump(mode="json"),
        "rubric": payload.effective_rubric.model_dump(mode="json"),
        "transcript": [turn.model_dump(mode="json") for turn in payload.transcript],
        "portfolio_url": str(payload.portfolio.url) if payload.portfolio else None,
        "language": payload.language,
        "llm_provider": settings.llm_provider,
        "llm_model": settings.llm_model,
        "prompt_version": PROMPT_VERSION,
        "scoring_samples": settings.scoring_samples,
        # needs_review is decided while scoring, from this setting.
        "review_spread": settings.review_spread,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cacheable(result: ScoringResult) -> bool:
    """Whether a result is a complete answer: an unavailable analyzer is a transient gap."""
    return result.portfolio is None or result.portfolio.status != "unavailable"


def _decode(raw: bytes | None) -> ScoringResult | None:
    if raw is None:
        return None
    try:
        return ScoringResult.model_validate_json(raw)
    except ValidationError:
        # An entry from an older shape of the result: a miss, overwritten by the next score.
        return None


class CachedScorer(Scorer):
    """A Scorer that answers repeats from the cache and shares the calls of identical requests.

    Identical requests in one process share one task; with Redis, processes share one too,
    through a lock whose holder publishes the result and whose expiry frees the waiters if
    the holder dies. A result served from another request's calls has `cached` set.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        llm: LLMClient,
        analyzer: PortfolioAnalyzer,
        cache: ResilientBackend,
    ) -> None:
        super().__init__(settings=settings, llm=llm, analyzer=analyzer)
        self._cache = cache
        self._ttl = settings.cache_ttl_s
        self._wait_s = settings.scoring_deadline_s + LOCK_MS / 1000
        self._inflight: dict[str, asyncio.Task[ScoringResult]] = {}

    async def score(self, payload: EvaluationCreate) -> ScoringResult:
        """The cached result, the result of an identical request in flight, or a new one."""
        if self._ttl == 0:
            return await super().score(payload)
        key = result_key(payload, self._settings)
        if key not in self._inflight:
            hit = _decode(await self._cache.get(f"{PREFIX}:result:{key}"))
            if hit is not None:
                CACHE_HITS.inc()
                return hit.model_copy(update={"cached": True})
        task = self._inflight.get(key)
        if task is not None:
            COALESCED.inc()
            result = await asyncio.shield(task)
            return result.model_copy(update={"cached": True})
        task = asyncio.create_task(self._score_shared(key, payload))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a leader whose client goes away must not cancel its followers' result.
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[ScoringResult]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so that a result nobody awaits logs nothing

    async def _score_shared(self, key: str, payload: EvaluationCreate) -> ScoringResult:
        if self._cache.redis is None:
            return await self._score_and_store(key, payload)
        lock, done = f"{PREFIX}:inflight:{key}:lock", f"{PREFIX}:inflight:{key}:done"
        token = uuid.uuid4().hex
        while True:
            acquired = await self._cache.add(lock, token.encode(), LOCK_MS)
            if acquired is None:
                # The cache is down: nobody to share with.
                return await self._score_and_store(key, payload)
            if acquired:
                return await self._lead(key, payload, lock=lock, done=done, token=token)
            shared = await self._wait_for(lock=lock, done=done)
            if shared is not None:
                COALESCED.inc()
                return shared.model_copy(update={"cached": True})
            # The holder failed or died without a result: try to become the holder.

    async def _lead(
        self, key: str, payload: EvaluationCreate, *, lock: str, done: str, token: str
    ) -> ScoringResult:
        heartbeat = asyncio.create_task(self._hold(lock, token))
        try:
            result = await self._score_and_store(key, payload)
            # Waiters get the result even when it is partial and therefore not cached.
            await self._cache.set(done, result.model_dump_json().encode(), DONE_TTL_S)
            return result
        finally:
            heartbeat.cancel()
            await self._cache.release_lock(lock, token)

    async def _hold(self, lock: str, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_MS / 3000)
            await self._cache.extend_lock(lock, token, LOCK_MS)

    async def _wait_for(self, *, lock: str, done: str) -> ScoringResult | None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._wait_s
        pause = _POLL_FIRST_S
        while loop.time() < give_up_at:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
            result = _decode(await self._cache.get(done))
            if result is not None:
                return result
            if await self._cache.get(lock) is None:
                # Released or expired: the result may have landed just before.
                return _decode(await self._cache.get(done))
        return None

    async def _score_and_store(self, key: str, payload: EvaluationCreate) -> ScoringResult:
        # A miss is counted where upstream calls are made: requests = hits + coalesced + misses.
        CACHE_MISSES.inc()
        result = await super().score(payload)
        if cacheable(result):
            await self._cache.set(
                f"{PREFIX}:result:{key}", result.model_dump_json().encode(), self._ttl
            )
        return result

    async def forget(self, payload: EvaluationCreate) -> None:
        """Drop the cached result of `payload`: it was derived from an erased evaluation."""
        await self._cache.clear(key=f"{PREFIX}:result:{result_key(payload, self._settings)}")
