"""The scorer behind the result cache: a repeat costs no upstream call."""

from __future__ import annotations

from pydantic import ValidationError

from service.cache.backend import ResilientBackend
from service.cache.result import Codec, SharedResults
from service.config import Settings
from service.evaluations.canonical import Interview
from service.evaluations.scorer import Scorer, ScoringResult


def cacheable(result: ScoringResult) -> bool:
    """Whether a result is a complete answer: an unavailable analyzer is a transient gap."""
    return result.portfolio is None or result.portfolio.status != "unavailable"


def _decode(raw: bytes) -> ScoringResult | None:
    try:
        return ScoringResult.model_validate_json(raw)
    except ValidationError:
        # An entry from an older shape of the result: a miss, overwritten by the next score.
        return None


CODEC: Codec[ScoringResult] = Codec(
    encode=lambda result: result.model_dump_json().encode(), decode=_decode, cacheable=cacheable
)


class CachedScorer:
    """Wraps a Scorer: the cached result, an identical request's in flight, or a new one.

    The key is a hash of what determines the result (Interview.result_key), never the
    candidate's identity; a result served from the cache or another request has `cached` set.
    """

    def __init__(self, scorer: Scorer, *, cache: ResilientBackend, settings: Settings) -> None:
        self._scorer = scorer
        self._settings = settings
        self._results: SharedResults[ScoringResult] | None = None
        if settings.cache_ttl_s > 0:
            self._results = SharedResults(
                cache=cache, codec=CODEC, ttl_s=settings.cache_ttl_s,
                wait_s=settings.scoring_deadline_s,
            )  # fmt: skip

    async def score(self, interview: Interview) -> ScoringResult:
        """The scoring result of `interview`."""
        if self._results is None:
            return await self._scorer.score(interview)
        result, shared = await self._results.get(
            interview.result_key(self._settings), lambda: self._scorer.score(interview)
        )
        return result.model_copy(update={"cached": True}) if shared else result

    async def forget(self, result_key: str) -> None:
        """Drop a cached result (Interview.result_key): it was derived from an erased evaluation."""
        if self._results is not None:
            await self._results.forget(result_key)

    async def forget_local(self) -> None:
        """Drop every result this process holds in process."""
        if self._results is not None:
            await self._results.forget_local()
