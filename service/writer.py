"""Grouped writes: one writer task per process commits what the requests hand it, together.

A request that stores rows (its evaluation, its outbox rows, its idempotency record) hands
them to the writer as one `Write` and waits. The writer takes every write that arrived while
it was busy, or within `max_delay_s` of the first, up to `max_rows`, and commits them in one
transaction: one Core bulk INSERT per table (executemany), then the updates. A request is
answered only after that commit. If the grouped transaction fails, each write of the group is
retried alone, so a row that breaks a constraint fails its own request and no other.

Why: one commit per request cost a twelfth of a request's CPU under load, the ORM's unit of
work as much again, and on SQLite every request queued for the single write lock. One writer
per process has the lock for a whole group at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Update

from service.database import create_sqlite_writer_engine
from service.wakeup import WakeSender, wake_directory

logger = logging.getLogger(__name__)

# The channel on which PostgreSQL tells the workers that new work was committed.
WORK_CHANNEL = "scorer_work"


@dataclass
class Write:
    """The rows of one request: inserts per table (in the order given), then updates."""

    inserts: list[tuple[Table, list[dict[str, Any]]]] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    # Whether the rows are work for a worker (an outbox row, a queued evaluation).
    wakes_worker: bool = False

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> Write:
        """Add rows to insert into `table`."""
        if rows:
            self.inserts.append((table, list(rows)))
        return self

    def update(self, statement: Update) -> Write:
        """Add an UPDATE, run after every insert of the group."""
        self.updates.append(statement)
        return self

    @property
    def row_count(self) -> int:
        """How many rows the write inserts or updates (an update counts one)."""
        return sum(len(rows) for _, rows in self.inserts) + len(self.updates)


# Called after each commit that stored work for a worker (to wake one in this process).
OnWork = Callable[[], Awaitable[None] | None]


class GroupWriter:
    """The process's writer task; `write` returns once the rows are committed."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_delay_s: float = 0.002,
        max_rows: int = 300,
        on_work: OnWork | None = None,
    ) -> None:
        self._engine = engine
        # On SQLite a group is committed from one thread of the writer's own, in one hop.
        self._sqlite: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = create_sqlite_writer_engine(engine)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-writer")
        self._max_delay_s = max_delay_s
        self._max_rows = max_rows
        # Set by whoever runs a worker in this process (the test suite) to wake it at once.
        self.on_work = on_work
        self._notify = engine.dialect.name == "postgresql"
        # On SQLite, a datagram to the workers of this database (service/wakeup.py).
        directory = wake_directory(engine.url)
        self._wake = WakeSender(directory) if directory is not None else None
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[None]]] = asyncio.Queue()
        # Transactions committed so far (a group, or a write retried alone).
        self.commits = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None and self._sqlite is not None:
            # Closed in its own thread: a SQLite connection is used where it was made.
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite.dispose)
            self._thread.shutdown()
            self._thread = None
        if self._wake is not None:
            self._wake.close()
            self._wake = None

    async def write(self, write: Write) -> None:
        """Commit `write` with whatever else is waiting; raises what its own rows raised."""
        if self._task is None:
            # Not started (a command-line tool, a test without the lifespan): alone.
            await self._commit([write])
            return
        future = asyncio.get_running_loop().create_future()
        # Retrieved here too, so that a request cancelled meanwhile leaves no unread error.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.put_nowait((write, future))
        # Shielded: a request whose client went away must not leave its rows half-known;
        # they are committed or not with their group, whatever happens to the request.
        await asyncio.shield(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            rows = group[0][0].row_count
            closes_at = loop.time() + self._max_delay_s
            while rows < self._max_rows:
                if self._queue.empty():
                    remaining = closes_at - loop.time()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            group.append(await self._queue.get())
                            rows += group[-1][0].row_count
                    continue
                group.append(self._queue.get_nowait())
                rows += group[-1][0].row_count
            try:
                await self._commit_group(group)
            finally:
                for _ in group:
                    self._queue.task_done()

    async def _commit_group(self, group: list[tuple[Write, asyncio.Future[None]]]) -> None:
        writes = [write for write, _ in group]
        try:
            await self._commit(writes)
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            logger.warning(
                "grouped write failed; writing one by one",
                extra={"error": type(exc).__name__, "writes": len(group)},
            )
            for write, future in group:
                try:
                    await self._commit([write])
                except Exception as single:
                    _settle(future, single)
                else:
                    _settle(future, None)
            return
        for _, future in group:
            _settle(future, None)

    async def _commit(self, writes: Sequence[Write]) -> None:
        work = any(w.wakes_worker for w in writes)
        if self._sqlite is not None and self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._thread, _commit_sync, self._sqlite, writes
            )
        else:
            async with self._engine.begin() as connection:
                for statement, parameters in _statements(writes):
                    await connection.execute(statement, parameters)
                if work and self._notify:
                    # Delivered to the listeners at commit, not before.
                    await connection.execute(text(f"NOTIFY {WORK_CHANNEL}"))
        self.commits += 1
        if work:
            await self._woken()

    async def announce_work(self) -> None:
        """Tell the workers of work committed elsewhere than here."""
        if self._notify:
            async with self._engine.begin() as connection:
                await connection.execute(text(f"NOTIFY {WORK_CHANNEL}"))
        await self._woken()

    async def _woken(self) -> None:
        if self._wake is not None:
            self._wake.send()
        if self.on_work is not None:
            woken = self.on_work()
            if woken is not None:
                await woken


def _statements(writes: Sequence[Write]) -> list[tuple[Executable, Any]]:
    """One executemany per table, in the order tables first appear (parents before children),
    each table's rows in the order of the writes; then every update."""
    by_table: dict[str, tuple[Table, list[dict[str, Any]]]] = {}
    for write in writes:
        for table, rows in write.inserts:
            by_table.setdefault(table.name, (table, []))[1].extend(rows)
    statements: list[tuple[Executable, Any]] = [
        (table.insert(), rows) for table, rows in by_table.values()
    ]
    statements.extend((statement, None) for write in writes for statement in write.updates)
    return statements


def _commit_sync(engine: Engine, writes: Sequence[Write]) -> None:
    # In the writer's thread: the whole transaction in one hop from the event loop.
    with engine.begin() as connection:
        for statement, parameters in _statements(writes):
            connection.execute(statement, parameters)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
