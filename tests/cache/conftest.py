"""Fixtures of the cache tests: a real Redis server, and every test on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache.redis_server import RedisServer, find_redis
from tests.conftest import server_unavailable


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """redis-server on a free loopback port for the whole session."""
    binary = find_redis()
    if binary is None:
        server_unavailable("redis-server is not installed")
    assert binary is not None
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's Redis server, emptied (and running) for this test."""
    redis_server.flush()
    return redis_server


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
