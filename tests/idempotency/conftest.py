"""The idempotency tests run on both cache backends, with the cache tests' Redis server."""

from tests.cache.conftest import backend_kind, redis, redis_server, settings_overrides

__all__ = ["backend_kind", "redis", "redis_server", "settings_overrides"]
