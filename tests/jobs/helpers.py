"""Helpers of the asynchronous-work tests: waiting for the background, telling items apart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from service.evaluations.models import Evaluation
from tests.conftest import LLM_BASE_URL, interview

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = "https://analyzer.test/analyze"
ASYNC = {"Prefer": "respond-async"}


async def eventually(
    check: Callable[[], Awaitable[bool]], *, tries: int = 1000, interval_s: float = 0.01
) -> None:
    """Wait until `check()` holds, polling; fails after `tries` polls (not a timing test)."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError("the background work did not get there")


def numbered(i: int, **changes: Any) -> dict[str, Any]:
    """An interview whose answer carries its number, so the LLM mock can tell items apart."""
    body = interview(**changes)
    body["candidate"] = {"name": f"Candidate {i}", "email": f"c{i}@example.com"}
    body["transcript"] = [
        {
            "question": "When would you not use asyncio?",
            "answer": f"Item {i}: For CPU-bound work the event loop gives nothing.",
        }
    ]
    body["portfolio"] = None
    body["notify"] = None  # no follow-up emails unless a test asks for them
    return body


def item_of(request: httpx.Request) -> int:
    """Which numbered interview an LLM request scores."""
    body = json.loads(request.content)
    text = " ".join(m["content"] for m in body["messages"])
    marker = text.index("Item ")
    return int(text[marker + 5 : text.index(":", marker)])


async def evaluations(app: FastAPI) -> list[Evaluation]:
    """Every stored evaluation."""
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(Evaluation)))
