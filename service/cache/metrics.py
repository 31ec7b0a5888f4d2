"""Prometheus counters of the scoring-result cache (default registry)."""

from __future__ import annotations

from prometheus_client import Counter

CACHE_HITS = Counter("scorer_cache_hits_total", "Scoring results served from the cache.")
CACHE_MISSES = Counter(
    "scorer_cache_misses_total", "Scoring requests that found nothing in the cache."
)
COALESCED = Counter(
    "scorer_coalesced_requests_total",
    "Scoring requests that shared an identical request's upstream calls instead of their own.",
)
