"""Prometheus metrics: what the service counts and times, and their exposition.

With several workers, PROMETHEUS_MULTIPROC_DIR must name a directory shared by them (the
`serve` command sets one up); every worker then writes its values there and /metrics adds them
up, whichever worker answers. Other features record into the metrics defined here
(OUTBOX_DEPTH, OUTBOX_FAILURES, ...) or define their own with the `scorer_` prefix.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import Scope

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# In multiprocess mode every metric writes to a file there from its definition on: a command
# other than `serve` (which prepares it) may import this module first.
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

# Seconds: the API answers in milliseconds to minutes (an LLM with retries).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)

HTTP_REQUESTS = Counter(
    "scorer_http_requests",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "scorer_http_request_duration_seconds",
    "HTTP request latency by route template and status",
    ["method", "route", "status"],
    buckets=_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "scorer_http_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum"
)
UPSTREAM_CALLS = Counter(
    "scorer_upstream_calls",
    "Calls to the LLM and the portfolio analyzer by outcome "
    "(ok, timeout, rate_limited, rejected, unavailable, error)",
    ["upstream", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "scorer_upstream_call_duration_seconds",
    "Latency of calls to the LLM and the portfolio analyzer by outcome",
    ["upstream", "outcome"],
    buckets=_BUCKETS,
)
UPSTREAM_IN_FLIGHT = Gauge(
    "scorer_upstream_calls_in_flight",
    "Calls to an upstream awaiting their answer",
    ["upstream"],
    multiprocess_mode="livesum",
)
LLM_TOKENS = Counter("scorer_llm_tokens", "LLM tokens used, by kind (prompt, completion)", ["kind"])
UPSTREAM_INVALID = Counter(
    "scorer_upstream_invalid_answers",
    "Answers of an upstream that failed validation (the LLM's schema, the analyzer's contract)",
    ["upstream"],
)
# The worker's backlog (service/backlog.py), read from the database when /metrics is scraped;
# failed deliveries are counted by the worker (its process shares the multiprocess directory
# that `serve` sets up).
OUTBOX_DEPTH = Gauge(
    "scorer_outbox_depth",
    "Messages (emails and webhooks) waiting for a worker: queued, being sent, or to be retried",
    multiprocess_mode="mostrecent",
)
JOBS_PENDING = Gauge(
    "scorer_jobs_pending",
    "Asynchronous evaluations waiting for a worker or being scored",
    multiprocess_mode="mostrecent",
)
OLDEST_UNCLAIMED_AGE = Gauge(
    "scorer_worker_oldest_unclaimed_age_seconds",
    "How long the longest-waiting unclaimed message or evaluation has been due (0 when none)",
    multiprocess_mode="mostrecent",
)
OUTBOX_FAILURES = Counter("scorer_outbox_failures", "Failed email delivery attempts")


@dataclass
class UpstreamCall:
    """The outcome of one upstream call, set by the caller ("ok" unless it says otherwise)."""

    outcome: str = "ok"


def _outcome_of(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    # A deadline (asyncio.timeout) cancels the call: CancelledError is a timeout here.
    if names & {"TimeoutError", "APITimeoutError", "TimeoutException", "CancelledError"}:
        return "timeout"
    if "RateLimitError" in names:
        return "rate_limited"
    if names & {"InternalServerError", "APIConnectionError", "TransportError", "NotACompletion"}:
        return "unavailable"
    if "APIStatusError" in names:
        return "rejected"
    return "error"


# A metric's child per label values, looked up once: `labels()` takes a lock and builds a key
# on every call, twice per upstream call and twice per request otherwise.
@functools.cache
def _in_flight(upstream: str) -> Gauge:
    return UPSTREAM_IN_FLIGHT.labels(upstream)


@functools.cache
def _outcome_metrics(upstream: str, outcome: str) -> tuple[Counter, Histogram]:
    return UPSTREAM_CALLS.labels(upstream, outcome), UPSTREAM_LATENCY.labels(upstream, outcome)


@functools.cache
def http_metrics(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and latency histogram of one method, route template and status."""
    labels = (method, route, str(status))
    return HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels)


class track_upstream:
    """Times one call to `upstream` and counts its outcome; an exception sets the outcome.

    A context manager both sync and async, so it joins an `async with` of other managers."""

    def __init__(self, upstream: str) -> None:
        self.call = UpstreamCall()
        self._upstream = upstream
        self._started = 0.0

    def __enter__(self) -> UpstreamCall:
        _in_flight(self._upstream).inc()
        self._started = time.perf_counter()
        return self.call

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is not None:
            self.call.outcome = _outcome_of(exc)
        _in_flight(self._upstream).dec()
        calls, latency = _outcome_metrics(self._upstream, self.call.outcome)
        calls.inc()
        latency.observe(time.perf_counter() - self._started)

    async def __aenter__(self) -> UpstreamCall:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def outcome_of_status(status: int) -> str:
    """The outcome label of an upstream's HTTP status."""
    if status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "unavailable"
    return "rejected"


def render_metrics() -> tuple[bytes, str]:
    """The exposition of every metric, across workers in multiprocess mode; and its type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited() -> None:
    """Drop this worker's live gauges from the shared directory (on shutdown)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def route_of(scope: Scope) -> str:
    """The route template a request matched (never the URL: it may carry personal data)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"
