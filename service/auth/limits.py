"""Per-key limits: a request rate and a cap on requests in flight, for each API key.

Both are off by default (SCORER_RATE_LIMIT_PER_S, SCORER_MAX_IN_FLIGHT_PER_KEY: 0). The state
is this process's: a token bucket and a counter per key id, checked in the API-key dependency
with no I/O. With several API processes (`serve --workers N`, replicas behind a load balancer)
each process counts alone, so one key gets up to N times the configured figures across the
deployment; set them per process (the fleet's limit divided by the number of processes).

A key over its limit is answered 429 at once and its request does nothing; the other keys
never wait on it: each key has its own bucket and its own count.
"""

from __future__ import annotations

import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import RateLimited, TooManyInFlight

# Where the key dependency leaves the key id whose in-flight count this request holds.
_HELD = "scorer.in_flight_key"


class KeyLimits:
    """This process's per-key rate (token bucket) and in-flight count."""

    def __init__(self, *, rate_per_s: float, burst: int, max_in_flight: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_in_flight = max_in_flight
        self._buckets: dict[str, tuple[float, float]] = {}
        self._in_flight: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.rate_per_s > 0 or self.max_in_flight > 0

    def admit(self, key_id: str, scope: Scope) -> None:
        """Count a request of `key_id`, or refuse it (429); the release is `release_held`'s."""
        if _HELD in scope:
            return  # counted already (a second key dependency of the same request)
        if self.max_in_flight and self._in_flight.get(key_id, 0) >= self.max_in_flight:
            raise TooManyInFlight(
                f"The API key has {self.max_in_flight} requests in flight "
                "(SCORER_MAX_IN_FLIGHT_PER_KEY); retry when one has finished.",
                retry_after_s=1,
            )
        if self.rate_per_s:
            now = time.monotonic()
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
            if tokens < 1:
                wait_s = math.ceil((1 - tokens) / self.rate_per_s)
                raise RateLimited(
                    f"The API key is over its rate of {self.rate_per_s:g} requests a second "
                    f"(SCORER_RATE_LIMIT_PER_S, bursts of {self.burst}); retry in {wait_s} s.",
                    retry_after_s=wait_s,
                )
            self._buckets[key_id] = (tokens - 1, now)
        if self.max_in_flight:
            self._in_flight[key_id] = self._in_flight.get(key_id, 0) + 1
            scope[_HELD] = key_id

    def release_held(self, scope: Scope) -> None:
        """Give back the in-flight count this request holds, if it holds one."""
        key_id = scope.pop(_HELD, None)
        if key_id is None:
            return
        left = self._in_flight.get(key_id, 1) - 1
        if left > 0:
            self._in_flight[key_id] = left
        else:
            self._in_flight.pop(key_id, None)


class InFlightRelease:
    """Releases a request's in-flight count once it is answered (installed with the cap)."""

    def __init__(self, app: ASGIApp, *, limits: KeyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.release_held(scope)
