"""Where the service's time goes, from py-spy's collapsed stacks (`py-spy record --format raw`).

Run: python -m bench.profile bench/results/profile-service-c100.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# The first rule whose marker is in a sample's stack names its cost; the order matters.
RULES = (
    ("emails: outbox, delivery (claim, render, send, mark) and its DB writes", "notifications/"),
    ("LLM: reading, normalizing and validating the answer", "llm/replies"),
    ("API-key lookup (session, ORM select)", "require_scope"),
    ("API-key lookup (session, ORM select)", "find_active_key"),
    ("database: evaluation insert and commit", "Session.flush"),
    ("database: evaluation insert and commit", "Session.commit"),
    ("database: evaluation insert and commit", "get_session"),
    ("database: session close", "Session.close"),
    ("database: API-key select (greenlet)", "Session.scalar"),
    ("LLM: openai SDK and HTTP call", "AsyncCompletions.create"),
    ("analyzer: HTTP call", "PortfolioAnalyzer.analyze"),
    ("evaluations code: prompt, combination, row, API view", "service/evaluations/"),
    ("FastAPI: dependencies", "solve_dependencies"),
    ("FastAPI: body parsing and validation", "request_body_to_args"),
    ("FastAPI: body parsing and validation", "Request.body"),
    ("FastAPI: response serialisation", "serialize_response"),
    ("HTTP client (aiohttp)", "aiohttp/"),
    ("uvicorn: HTTP protocol", "uvicorn/protocols"),
    ("event loop", "asyncio/"),
    ("event loop", "uvloop"),
)


def breakdown(path: Path) -> list[tuple[str, float]]:
    """Share of samples per cost, largest first."""
    costs: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        name = next((name for name, marker in RULES if marker in stack), "other")
        costs[name] += samples
    return [(name, samples / max(total, 1)) for name, samples in costs.most_common()]


def render(path: Path) -> str:
    """The breakdown as text lines."""
    return "\n".join(f"{share:6.1%}  {name}" for name, share in breakdown(path))


if __name__ == "__main__":
    print(render(Path(sys.argv[1])))
