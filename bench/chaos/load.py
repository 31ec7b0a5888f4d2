"""The chaos run's load: a fixed number of requests always in flight, each a distinct interview,
one in five asking `Prefer: respond-async`; and a poller of /readyz beside it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import base_interview, distinct_interview

ASYNC_EVERY = 5
READYZ_EVERY_S = 0.2


@dataclass
class Sent:
    """One request and what came of it: a status and body, or none: `cut` says whether the
    connection was refused or cut off while the request was in flight."""

    index: int
    respond_async: bool
    started: float
    ended: float = 0.0
    status: int | None = None
    body: bytes = b""
    cut: str | None = None

    @property
    def external_id(self) -> str:
        """The candidate's external id, unique to this request: how its rows are found."""
        return external_id(self.index)


def external_id(index: int) -> str:
    """The external id of request `index`."""
    return f"chaos-{index}"


def chaos_interview(base: dict[str, Any], index: int) -> bytes:
    """Request `index`'s body: its own transcript (no cache hit) and its own candidate."""
    body = distinct_interview(base, f"chaos-{index}")
    body["candidate"] = {
        "name": f"Candidate {index}",
        "email": f"candidate-{index}@example.com",
        "external_id": external_id(index),
    }
    return json.dumps(body).encode()


@dataclass
class Load:
    """Keeps `in_flight` requests in flight against the API until stopped."""

    base_url: str
    api_key: str
    in_flight: int
    sent: list[Sent] = field(default_factory=list)
    # (when, what /readyz said: "ok", or why not: the checks down, "timeout", "refused").
    readyz: list[tuple[float, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def ready_again(self, *, since: float, within_s: float) -> float | None:
        """The first moment after `since` at which /readyz said ok; None if not within the
        bound."""
        try:
            async with asyncio.timeout(within_s):
                while True:
                    found = next(
                        (at for at, said in self.readyz if said == "ok" and at >= since), None
                    )
                    if found is not None:
                        return found
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            return None

    async def run(self) -> None:
        """Send until `stop()`; then wait for the answers still due."""
        base = base_interview()
        connector = aiohttp.TCPConnector(limit=0)
        # Longer than any deadline of the service: a request is answered or cut, never dropped.
        timeout = aiohttp.ClientTimeout(total=180)
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            counter = iter(range(10**9))

            async def one_after_another() -> None:
                while not self._stop.is_set():
                    index = next(counter)
                    await self._send(session, headers, base, index)

            poller = asyncio.create_task(self._poll_readyz(session))
            await asyncio.gather(*(one_after_another() for _ in range(self.in_flight)))
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    def stop(self) -> None:
        """Send no more."""
        self._stop.set()

    async def _send(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        base: dict[str, Any],
        index: int,
    ) -> None:
        respond_async = index % ASYNC_EVERY == ASYNC_EVERY - 1
        record = Sent(index, respond_async, time.monotonic())
        self.sent.append(record)
        extra = {"Prefer": "respond-async"} if respond_async else {}
        try:
            async with session.post(
                f"{self.base_url}/v1/evaluations",
                data=chaos_interview(base, index),
                headers={**headers, **extra},
            ) as response:
                record.body = await response.read()
                record.status = response.status
        except aiohttp.ClientConnectorError:
            record.cut = "refused"
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.cut = f"cut ({type(exc).__name__})"
        record.ended = time.monotonic()
        if record.status is None or record.status >= 300:
            # As a client would after an error or a refusal (a 503's Retry-After, say): not at
            # once, so that an outage is not a busy loop of this generator.
            await asyncio.sleep(0.2)

    async def _poll_readyz(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        while True:
            at = time.monotonic()
            try:
                async with session.get(f"{self.base_url}/readyz", timeout=timeout) as response:
                    checks = json.loads(await response.read()).get("checks", {})
                    down = sorted(name for name, state in checks.items() if state != "ok")
                    said = ", ".join(down) + " down" if down else "ok"
            except aiohttp.ClientConnectorError:
                said = "refused"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                said = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.readyz.append((at, said))
            self._ready.set()
            await asyncio.sleep(READYZ_EVERY_S)
