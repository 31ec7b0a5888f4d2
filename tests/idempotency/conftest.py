"""The idempotency tests run on both cache backends, as the cache tests do."""

from tests.cache.conftest import backend_kind, settings_overrides

__all__ = ["backend_kind", "settings_overrides"]
