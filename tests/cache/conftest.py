"""Fixtures of the cache tests: every test on both backends (Redis: tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cache.redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Which cache backend the test runs against."""
    kind: str = request.param
    return kind


@pytest.fixture
def settings_overrides(backend_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The in-process cache, or the test Redis server."""
    if backend_kind == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        return {"redis_url": server.url}
    return {}
