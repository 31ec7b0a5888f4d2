"""The worker's queue as the benchmark sees it: what is still to deliver, and what was sent."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

OUTSTANDING = text(
    "SELECT count(*) FROM outbox_message WHERE status IN ('queued', 'sending') "
    "OR (status = 'failed' AND next_attempt_at IS NOT NULL)"
)
SENT = text("SELECT count(*) FROM outbox_message WHERE status = 'sent'")


class Queue:
    """Counts in the service's database (read-only, a connection per question)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def _count(self, statement: object) -> int:
        async def count() -> int:
            engine = create_async_engine(self.database_url)
            try:
                async with engine.connect() as connection:
                    value = await connection.scalar(statement)  # type: ignore[call-overload]
                    return int(value or 0)
            finally:
                await engine.dispose()

        return asyncio.run(count())

    def outstanding(self) -> int:
        """Messages queued, being sent, or failed and to be retried."""
        return self._count(OUTSTANDING)

    def sent(self) -> int:
        """Messages delivered so far."""
        return self._count(SENT)

    def drain(self, *, timeout_s: float) -> tuple[float, int]:
        """Wait until nothing is outstanding: the seconds it took, and what was left then."""
        started = time.perf_counter()
        left = self.outstanding()
        while left and time.perf_counter() - started < timeout_s:
            time.sleep(0.1)
            left = self.outstanding()
        return time.perf_counter() - started, left
