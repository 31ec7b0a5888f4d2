"""What must hold after the chaos: read from the API, the database and the SMTP server's log."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.chaos.load import Sent
from service.evaluations.models import Evaluation
from service.notifications.outbox import OutboxMessage

# The problem types an async evaluation may fail with: the LLM's failures (errors.py).
UPSTREAM_FAILURES = ("/llm-unavailable", "/llm-timeout", "/llm-invalid-output", "/llm-rejected")
# What the worker changes after the answer, by design: the mails' progress.
_MAIL_PROGRESS = ("status", "attempts", "next_attempt_at")


@dataclass
class Verdict:
    """Each check by name: the problems found (none: it holds), and the figures behind them."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=dict)

    def add(self, check: str, problems: list[str]) -> None:
        """Record a check's problems (an empty list: it holds)."""
        self.problems[check] = problems

    @property
    def holds(self) -> bool:
        """Whether every check holds."""
        return not any(self.problems.values())


async def wait_for_drain(sessions: async_sessionmaker[AsyncSession], *, within_s: float) -> bool:
    """Wait until no mail waits to be sent or retried and no evaluation waits to be scored (a
    mail given up is not waited for: the checks report it); False if not within the bound."""
    waiting = select(OutboxMessage.id).where(
        OutboxMessage.status.in_(("queued", "sending"))
        | ((OutboxMessage.status == "failed") & OutboxMessage.next_attempt_at.is_not(None))
    )
    pending = select(Evaluation.id).where(Evaluation.status == "pending")
    try:
        async with asyncio.timeout(within_s):
            while True:
                async with sessions() as session:
                    if (
                        await session.scalar(waiting.limit(1)) is None
                        and await session.scalar(pending.limit(1)) is None
                    ):
                        return True
                await asyncio.sleep(0.5)
    except TimeoutError:
        return False


def _normal(body: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's body without the mails' progress."""
    mails = [
        {k: v for k, v in mail.items() if k not in _MAIL_PROGRESS}
        for mail in body.get("notifications", [])
    ]
    return {**body, "notifications": mails}


async def _read_back(
    base_url: str, api_key: str, ids: list[str]
) -> dict[str, tuple[int, dict[str, Any] | None]]:
    found: dict[str, tuple[int, dict[str, Any] | None]] = {}
    semaphore = asyncio.Semaphore(50)
    async with aiohttp.ClientSession(headers={"X-API-Key": api_key}) as session:

        async def read(id_: str) -> None:
            async with semaphore, session.get(f"{base_url}/v1/evaluations/{id_}") as response:
                body = await response.read()
                found[id_] = (
                    response.status,
                    json.loads(body) if response.status == 200 else None,
                )

        await asyncio.gather(*(read(id_) for id_ in ids))
    return found


def received_message_ids(sink_log: Path) -> Counter[str]:
    """How often the SMTP server accepted each Message-ID."""
    if not sink_log.exists():
        return Counter()
    return Counter(line for line in sink_log.read_text().splitlines() if line)


async def check(
    *,
    sent: list[Sent],
    sessions: async_sessionmaker[AsyncSession],
    base_url: str,
    api_key: str,
    sink_log: Path,
) -> Verdict:
    """Every promise of the run, checked once the worker has drained."""
    verdict = Verdict()
    answered = [s for s in sent if s.status is not None]
    verdict.figures["requests"] = len(sent)
    verdict.figures["answered"] = len(answered)
    verdict.figures["cut (no answer)"] = len(sent) - len(answered)

    verdict.add(
        "no 500 at any point",
        [f"request {s.index}: {s.status} {s.body[:200]!r}" for s in answered if s.status == 500],
    )

    async with sessions() as session:
        evaluations = list(
            await session.execute(
                select(
                    Evaluation.id,
                    Evaluation.candidate_external_id,
                    Evaluation.status,
                    Evaluation.error,
                )
            )
        )
        mails = list(
            await session.execute(
                select(
                    OutboxMessage.message_id,
                    OutboxMessage.evaluation_id,
                    OutboxMessage.kind,
                    OutboxMessage.recipient,
                    OutboxMessage.status,
                    OutboxMessage.next_attempt_at,
                    OutboxMessage.attempts,
                )
            )
        )
    by_external: dict[str, list[str]] = {}
    status_of: dict[str, str] = {}
    error_of: dict[str, Any] = {}
    for id_, external, status, error in evaluations:
        by_external.setdefault(external or "", []).append(id_)
        status_of[id_] = status
        error_of[id_] = error
    verdict.figures["evaluations stored"] = len(evaluations)

    # Each accepted request stored exactly one evaluation, the one it answered with.
    accepted = [s for s in answered if s.status in (201, 202)]
    problems = []
    for s in accepted:
        id_ = json.loads(s.body)["id"]
        if by_external.get(s.external_id) != [id_]:
            problems.append(
                f"request {s.index} answered {id_}, stored {by_external.get(s.external_id)}"
            )
    verdict.add("each 201/202 stored once", problems)

    # Nothing stored for a request answered with an error.
    errors = [s for s in answered if s.status not in (201, 202)]
    verdict.add(
        "no evaluation stored for an error",
        [
            f"request {s.index} answered {s.status}, stored {by_external[s.external_id]}"
            for s in errors
            if s.external_id in by_external
        ],
    )

    # Every 201 readable afterwards with the same body (the mails' progress aside).
    created = {json.loads(s.body)["id"]: s for s in answered if s.status == 201}
    readback = await _read_back(base_url, api_key, list(created))
    problems = []
    for id_, s in created.items():
        code, body = readback[id_]
        if code != 200 or body is None:
            problems.append(f"{id_}: read back {code}")
        elif (first := _normal(json.loads(s.body))) != (again := _normal(body)):
            differ = sorted(k for k in first.keys() | again.keys() if first.get(k) != again.get(k))
            problems.append(f"{id_}: read back differs from its 201 in {', '.join(differ)}")
    verdict.add("every 201 readable with the same body", problems)

    # Every mail of every stored evaluation delivered exactly once (keyed by Message-ID).
    received = received_message_ids(sink_log)
    outbox_ids = {row.message_id for row in mails}
    problems = [
        f"{row.message_id} ({row.kind}): {row.status}" for row in mails if row.status != "sent"
    ]
    problems += [f"{m}: sent but never received" for m in outbox_ids - set(received)]
    problems += [f"{m}: received, not in any outbox" for m in set(received) - outbox_ids]
    kinds = Counter((row.evaluation_id, row.kind, row.recipient) for row in mails)
    problems += [f"{key}: queued {n} times" for key, n in kinds.items() if n > 1]
    completed = {id_ for id_, status in status_of.items() if status == "completed"}
    with_mail = {row.evaluation_id for row in mails}
    problems += [f"{id_}: completed without its mails" for id_ in completed - with_mail]
    verdict.add("every mail delivered exactly once", problems)
    verdict.figures["mails"] = len(outbox_ids)
    verdict.figures["mails claimed more than once"] = sum(row.attempts > 1 for row in mails)
    verdict.figures["mails accepted again by SMTP (same Message-ID)"] = sum(
        n - 1 for n in received.values()
    )

    # Every async job finished exactly once: completed with its mails once, or failed.
    jobs = [json.loads(s.body)["id"] for s in answered if s.status == 202]
    problems = [
        f"{id_}: {status_of.get(id_)}"
        for id_ in jobs
        if status_of.get(id_) not in ("completed", "failed")
    ]
    # Failed for a reason the API promises (the LLM's errors), never for a bug of the worker.
    problems += [
        f"{id_}: failed with {(error_of[id_] or {}).get('type')}"
        for id_ in jobs
        if status_of.get(id_) == "failed"
        and not str((error_of[id_] or {}).get("type", "")).endswith(UPSTREAM_FAILURES)
    ]
    verdict.add("every async job finished exactly once", problems)
    verdict.figures["async jobs"] = len(jobs)
    verdict.figures["async jobs failed"] = sum(status_of.get(i) == "failed" for i in jobs)
    return verdict
