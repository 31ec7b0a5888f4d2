"""The chaos run: the deployment under continuous load, one fault after another, then the checks.

    python -m bench.chaos [--database sqlite|postgresql|both] [--profile full|reduced]

Per fault it reports the answers by status, the p99 latency of the answers, and how long
/readyz was not ready and how soon after the fault was healed it was ready again; afterwards it
checks what the service promises (bench/chaos/checks.py). docs/chaos.md shows a run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.checks import Verdict, check, wait_for_drain
from bench.chaos.load import Load, Sent
from bench.chaos.stack import FULL, REDUCED, Profile, Stack
from bench.loadgen import percentile
from service.config import Settings
from service.database import create_engine, create_sessionmaker

Action = Callable[[], Awaitable[None]]
# A bound on waiting for /readyz to say ok after a fault is healed.
READY_WITHIN_S = 120


@dataclass(frozen=True)
class Fault:
    """Something that goes wrong: injected, held for a while, then healed."""

    name: str
    inject: Action
    heal: Action
    hold_s: float = 0.0


@dataclass(frozen=True)
class Phase:
    """A fault's stretch of the run: from its injection to the next fault's; `ready` is when
    /readyz said ok again after the fault was healed (None: not within the bound)."""

    name: str
    started: float
    healed: float
    ready: float | None
    ended: float


@dataclass
class Row:
    """One line of the table."""

    fault: str
    by_status: Counter[str]
    p99_s: float | None
    # How long /readyz was not ok in the phase, and why (the most frequent reason first).
    not_ready_s: float
    why: list[str]
    # From the fault's healing to /readyz ok again; None for the baseline or when it never was.
    ready_after_s: float | None
    healed: bool

    def cells(self) -> list[str]:
        """The row's cells as the table prints them."""
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        p99 = f"{self.p99_s:.2f}" if self.p99_s is not None else "-"
        ready = "ok throughout"
        if self.not_ready_s > 0:
            ready = f"not ok {self.not_ready_s:.1f} s ({'; '.join(self.why)})"
        if self.healed:
            if self.ready_after_s is None:
                ready += f"; not ok again within {READY_WITHIN_S} s"
            elif self.not_ready_s > 0:
                ready += f"; ok {self.ready_after_s:.1f} s after the fault was healed"
        return [self.fault, str(sum(self.by_status.values())), statuses, p99, ready]


@dataclass
class Result:
    """A whole run on one database."""

    database: str
    profile: str
    rows: list[Row] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    elapsed_s: float = 0.0

    def table(self) -> str:
        """The report as a Markdown table, then the checks."""
        head = ["fault", "requests", "answers by status", "p99 (s)", "/readyz"]
        lines = [
            f"**{self.database}** ({self.profile} profile, {self.elapsed_s:.0f} s)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
        lines.append("")
        figures = ", ".join(f"{k}: {v}" for k, v in self.verdict.figures.items())
        lines.append(f"Totals: {figures}.")
        lines.append("")
        for name, problems in self.verdict.problems.items():
            mark = "holds" if not problems else f"FAILS ({len(problems)})"
            lines.append(f"- {name}: {mark}")
            lines += [f"    - {p}" for p in problems[:10]]
        return "\n".join(lines)


def faults(stack: Stack) -> list[Fault]:
    """The faults, in the order they strike."""
    profile = stack.profile

    def blocking(call: Callable[[], None]) -> Action:
        return lambda: asyncio.to_thread(call)

    listed = [Fault("Redis restarted", blocking(stack.redis.stop), blocking(stack.redis.start))]
    if stack.cluster is not None:
        listed.append(
            Fault(
                f"PostgreSQL stopped {profile.postgres_down_s:g} s",
                blocking(stack.cluster.halt),
                blocking(stack.cluster.resume),
                profile.postgres_down_s,
            )
        )
    llm, analyzer = stack.llm_port, stack.analyzer_port
    hang = profile.portfolio_timeout_s * 3
    listed += [
        Fault(
            f"SMTP down {profile.smtp_down_s:g} s",
            blocking(stack.sink.stop),
            blocking(stack.sink.start),
            profile.smtp_down_s,
        ),
        Fault(
            "worker kill -9, restarted", blocking(stack.worker.kill), blocking(stack.worker.start)
        ),
        Fault("API kill -9, restarted", blocking(stack.api.kill), blocking(stack.api.start)),
        Fault(
            f"LLM: 30% of calls 500 or 429 for {profile.fault_s:g} s",
            lambda: stack.set_upstream(llm, failure_rate=0.15, rate_limit_rate=0.15),
            lambda: stack.set_upstream(llm, failure_rate=0, rate_limit_rate=0),
            profile.fault_s,
        ),
        Fault(
            f"analyzer hangs {hang:g} s (timeout {profile.portfolio_timeout_s:g} s)"
            f" for {profile.fault_s:g} s",
            lambda: stack.set_upstream(analyzer, analyzer_latency_s=hang),
            lambda: stack.set_upstream(analyzer, analyzer_latency_s=profile.analyzer_latency_s),
            profile.fault_s,
        ),
    ]
    return listed


def _outcome(sent: Sent) -> str:
    if sent.status is None:
        return str(sent.cut)
    if sent.status == 201 and b'"partial":true' in sent.body:
        return "201 partial"
    return str(sent.status)


def _row(phase: Phase, sent: list[Sent], readyz: list[tuple[float, str]]) -> Row:
    # The answers that came in the phase (a request sent before a fault and answered during
    # it met the fault).
    mine = [s for s in sent if phase.started <= s.ended < phase.ended]
    by_status = Counter(_outcome(s) for s in mine)
    p99 = percentile([s.ended - s.started for s in mine if s.status is not None], 0.99)
    samples = [(at, said) for at, said in readyz if phase.started <= at < phase.ended]
    # A sample that was not ok counts until the next one.
    not_ok: dict[str, float] = {}
    for (at, said), later in itertools.pairwise(samples):
        if said != "ok":
            not_ok[said] = not_ok.get(said, 0.0) + later[0] - at
    healed = phase.healed > phase.started
    after = None if phase.ready is None else max(0.0, phase.ready - phase.healed)
    longest = sorted(not_ok.items(), key=lambda item: -item[1])[:3]
    why = [f"{said} {seconds:.1f} s" for said, seconds in longest]
    return Row(phase.name, by_status, p99, sum(not_ok.values()), why, after, healed)


async def _drive(stack: Stack, result: Result) -> None:
    profile = stack.profile
    load = Load(stack.base_url, stack.api_key, profile.in_flight)
    running = asyncio.create_task(load.run())
    phases = []
    try:
        started = time.monotonic()
        await asyncio.sleep(profile.baseline_s)
        phases.append(Phase("none (baseline)", started, started, None, time.monotonic()))
        for fault in faults(stack):
            started = time.monotonic()
            print(f"chaos [{stack.database}]: {fault.name}", file=sys.stderr, flush=True)
            await fault.inject()
            await asyncio.sleep(fault.hold_s)
            await fault.heal()
            healed = time.monotonic()
            # The next fault strikes a recovered service: a while after /readyz says ok.
            ready = await load.ready_again(since=healed, within_s=READY_WITHIN_S)
            await asyncio.sleep(profile.settle_s)
            phases.append(Phase(fault.name, started, healed, ready, time.monotonic()))
    finally:
        load.stop()
        await running
    result.rows = [_row(phase, load.sent, load.readyz) for phase in phases]
    print(f"chaos [{stack.database}]: draining", file=sys.stderr, flush=True)
    settings = Settings(_env_file=None, database_url=stack.database_url, llm_provider="simulated")
    engine = create_engine(settings)
    try:
        sessions = create_sessionmaker(engine)
        drained = await wait_for_drain(sessions, within_s=profile.drain_s)
        result.verdict = await check(
            sent=load.sent,
            sessions=sessions,
            base_url=stack.base_url,
            api_key=stack.api_key,
            sink_log=stack.sink_log,
        )
        result.verdict.add(
            "the worker drained what the load left",
            [] if drained else [f"work still waiting {profile.drain_s:g} s after the load"],
        )
    finally:
        await engine.dispose()


def run_chaos(*, profile: Profile, database: str, workdir: Path) -> Result:
    """One run on `database`; the servers' logs stay in `workdir`."""
    result = Result(database=database, profile=profile.name)
    began = time.monotonic()
    stack = Stack(profile=profile, database=database, workdir=workdir)
    try:
        stack.start()
        asyncio.run(_drive(stack, result))
    finally:
        stack.close()
    result.elapsed_s = time.monotonic() - began
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line: every database asked for, one after the other; 1 if a check fails."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--profile", choices=["full", "reduced"], default="full")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    profile = FULL if args.profile == "full" else REDUCED
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scorer-chaos-"))
    results = []
    for database in databases:
        result = run_chaos(profile=profile, database=database, workdir=workdir / database)
        print(result.table(), "\n", flush=True)
        results.append(result)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "database": r.database,
                        "rows": [row.cells() for row in r.rows],
                        "figures": r.verdict.figures,
                        "problems": r.verdict.problems,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    print(f"servers' logs: {workdir}", file=sys.stderr)
    return 0 if all(r.verdict.holds for r in results) else 1
