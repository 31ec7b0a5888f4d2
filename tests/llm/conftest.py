"""Fixtures of the LLM tests: the app, the analyzer answering, the client's waits recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import respx
from fastapi import FastAPI

from service.config import Settings
from service.llm import client as llm_client
from service.main import create_app
from tests.conftest import ANALYZER_URL, analysis, serving


@pytest.fixture(autouse=True)
def analyzer_ok(upstream: respx.MockRouter) -> None:
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the LLM client waits between attempts, recorded instead of slept."""
    recorded: list[float] = []

    async def wait(delay: float) -> None:
        recorded.append(delay)
        await asyncio.sleep(0)

    monkeypatch.setattr(llm_client, "_sleep", wait)
    return recorded


@pytest.fixture
async def app(settings: Settings, upstream: respx.MockRouter) -> AsyncIterator[FastAPI]:
    """The application and its worker, stopped before the upstream mocks are: the worker's
    scorings of asynchronous evaluations never reach the real network."""
    async with serving(create_app(settings)) as application:
        yield application
