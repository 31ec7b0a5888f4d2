"""The load generator: a closed loop of N workers over one aiohttp session, in its own process.

It reports its own CPU use and event-loop lag: a generator near a full core, or whose loop lags,
would be measuring itself rather than the server.
Run: python -m bench.loadgen --url URL --concurrency 100 --requests 500 --out level.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import base_interview, distinct_interview

LAG_PROBE_S = 0.01


@dataclass
class Outcome:
    """Everything one run of the generator saw."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cached: int = 0
    first_send: float = 0.0
    last_done: float = 0.0
    lags: list[float] = field(default_factory=list)


def bodies(count: int, *, mode: str, tag: str) -> list[bytes]:
    """Encoded request bodies: all distinct, or one interview repeated."""
    base = base_interview()
    if mode == "repeat":
        one = json.dumps(distinct_interview(base, f"{tag}-repeat")).encode()
        return [one] * count
    return [json.dumps(distinct_interview(base, f"{tag}-{i}")).encode() for i in range(count)]


def percentile(values: list[float], share: float) -> float | None:
    """The `share` quantile (0..1) of `values`, nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))
    return ordered[rank]


async def _lag_probe(outcome: Outcome, stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_S)
        outcome.lags.append(time.perf_counter() - before - LAG_PROBE_S)


async def drive(
    *,
    url: str,
    headers: dict[str, str],
    payloads: list[bytes],
    concurrency: int,
    time_limit_s: float,
    timeout_s: float,
) -> Outcome:
    """Send every payload with `concurrency` workers, starting no new one after the limit."""
    outcome = Outcome()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    next_index = 0
    send_headers = {**headers, "Content-Type": "application/json"}
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + time_limit_s

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(payloads) and time.perf_counter() < deadline:
                body = payloads[next_index]
                next_index += 1
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=send_headers) as response:
                        content = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome.errors[type(exc).__name__] += 1
                    outcome.last_done = time.perf_counter()
                    continue
                done = time.perf_counter()
                outcome.last_done = done
                if 200 <= status < 300:
                    outcome.latencies.append(done - sent)
                    if b'"cached":true' in content:
                        outcome.cached += 1
                else:
                    outcome.errors[f"HTTP {status}"] += 1

        probe = asyncio.create_task(_lag_probe(outcome, stop))
        outcome.first_send = started
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        stop.set()
        await probe
    return outcome


def summarise(outcome: Outcome, *, cpu_s: float, wall_s: float) -> dict[str, Any]:
    """The figures of one level, in seconds and requests per second."""
    ok = len(outcome.latencies)
    span = max(outcome.last_done - outcome.first_send, 1e-9)
    return {
        "requests": ok + sum(outcome.errors.values()),
        "ok": ok,
        "errors": sum(outcome.errors.values()),
        "error_kinds": dict(outcome.errors),
        "cached": outcome.cached,
        "duration_s": round(span, 3),
        "throughput_rps": round(ok / span, 2),
        "p50_s": percentile(outcome.latencies, 0.50),
        "p95_s": percentile(outcome.latencies, 0.95),
        "p99_s": percentile(outcome.latencies, 0.99),
        "mean_s": statistics.fmean(outcome.latencies) if outcome.latencies else None,
        "loadgen_cpu_share": round(cpu_s / max(wall_s, 1e-9), 3),
        "loadgen_loop_lag_p99_s": percentile(outcome.lags, 0.99),
        "loadgen_loop_lag_max_s": max(outcome.lags, default=None),
    }


def main() -> None:
    """Run one level and write its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=os.environ.get("BENCH_API_KEY"))
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--time-limit", type=float, default=60.0, metavar="S")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S")
    parser.add_argument("--mode", choices=["distinct", "repeat"], default="distinct")
    parser.add_argument("--tag", default=uuid.uuid4().hex[:12])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("the benchmark only drives loopback addresses")
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    payloads = bodies(args.requests, mode=args.mode, tag=args.tag)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    outcome = asyncio.run(
        drive(
            url=args.url,
            headers=headers,
            payloads=payloads,
            concurrency=args.concurrency,
            time_limit_s=args.time_limit,
            timeout_s=args.timeout,
        )
    )
    cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
    args.out.write_text(json.dumps(summarise(outcome, cpu_s=cpu_s, wall_s=wall_s), indent=2))


if __name__ == "__main__":
    main()
