"""Fixtures of the asynchronous-work tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import respx
from fastapi import FastAPI

from service.config import Settings
from service.main import create_app
from tests.conftest import serving


@pytest.fixture
async def app(settings: Settings, upstream: respx.MockRouter) -> AsyncIterator[FastAPI]:
    """The application and its worker, stopped before the upstream mocks are: its background
    work never reaches the real network."""
    async with serving(create_app(settings)) as application:
        yield application
