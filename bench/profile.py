"""Where the service's time goes, from py-spy's collapsed stacks (`py-spy record --format raw`).

Run: python -m bench.profile bench/results/profile-service-c100.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# A sample's cost is named by its innermost frame that one of these markers is in (looked for
# in this order within a frame): the code that was running, not the feature that called it. A
# JSON encoder called by the openai SDK counts as "JSON", one called by the writer as "JSON" too.
RULES = (
    ("our code: grouped writes (writer, its commit thread)", "service/writer"),
    ("our code: evaluations (canonical form, prompt, combination, answer bytes)", "evaluations/"),
    ("our code: LLM client and reply checks", "service/llm/"),
    ("our code: LLM client and reply checks", "llm/"),
    ("our code: analyzer client", "portfolio/"),
    ("our code: key check, limits, cache, middleware, metrics, logs", "service/"),
    ("JSON encode and decode", "json/"),
    ("pydantic validation and serialisation", "pydantic"),
    ("SQLAlchemy and aiosqlite (the writer's inserts, the key cache's misses)", "sqlalchemy/"),
    ("SQLAlchemy and aiosqlite (the writer's inserts, the key cache's misses)", "aiosqlite/"),
    ("openai SDK (request options, retries, response)", "openai/"),
    ("httpx request and response models (under the SDK)", "httpx"),
    ("HTTP client (aiohttp)", "aiohttp"),
    ("uvicorn: HTTP protocol", "uvicorn/"),
    ("Starlette and FastAPI routing", "starlette/"),
    ("Starlette and FastAPI routing", "fastapi/"),
    ("event loop and tasks", "asyncio/"),
    ("event loop and tasks", "uvloop"),
)


def _cost(frames: list[str]) -> str:
    for frame in reversed(frames):
        # "function (path:line)": the path names the part.
        where = frame.rpartition("(")[2]
        for name, marker in RULES:
            if marker in where:
                return name
    return "other (standard library, GC, start-up)"


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
        costs[_cost(stack.split(";"))] += samples
    return [(name, samples / max(total, 1)) for name, samples in costs.most_common()]


def render(path: Path) -> str:
    """The breakdown as text lines."""
    return "\n".join(f"{share:6.1%}  {name}" for name, share in breakdown(path))


if __name__ == "__main__":
    print(render(Path(sys.argv[1])))
