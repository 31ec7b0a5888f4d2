"""Fixtures of the asynchronous-work tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import respx
from fastapi import FastAPI

from service.config import Settings
from service.main import create_app


@pytest.fixture
async def app(settings: Settings, upstream: respx.MockRouter) -> AsyncIterator[FastAPI]:
    """The application, stopped before the upstream mocks are: its background work never
    reaches the real network."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
