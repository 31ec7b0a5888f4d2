"""The worker: everything that happens after an answer, in a process of its own.

`interview-scorer worker` runs it alone; `interview-scorer serve` starts one beside the API and
restarts it if it dies. It renders and delivers the follow-up emails, delivers the webhooks, and
scores the asynchronous evaluations and batches, all from rows in the database: the API process
only writes those rows. Several workers may run at once: every piece of work is claimed under a
lease (FOR UPDATE SKIP LOCKED on PostgreSQL, one conditional UPDATE on SQLite), so none is done
twice, and work a dead worker had claimed is taken up again when its lease expires.

New work is noticed at its commit: on PostgreSQL by a LISTEN on the channel the API's writer
NOTIFYs, on SQLite by a datagram the writer sends to the worker's socket (service/wakeup.py);
in one process (the test suite) the API's writer wakes it directly. A watcher also asks the
database every SCORER_WORKER_POLL_S (1 s) whether anything is due, which picks up retries
whose time has come, claims a dead worker left behind, and work whose wake-up was lost; it
wakes only the deliverer that has work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import lazyload

import service.models  # noqa: F401  (every table mapped: relationships name each other)
from service.config import Settings
from service.evaluations.cached import CachedScorer
from service.evaluations.erasures import ErasureWatcher
from service.evaluations.models import Evaluation
from service.evaluations.scorer import Scorer
from service.jobs import repository as jobs_repository
from service.jobs.runner import JobRunner
from service.notifications import outbox
from service.notifications.delivery import Deliverer
from service.notifications.follow_ups import EvaluationFacts
from service.notifications.sender import EmailSender, build_sender
from service.wakeup import WakeListener, wake_directory
from service.webhooks.delivery import CHANNEL as WEBHOOK_CHANNEL
from service.webhooks.delivery import WebhookDeliverer
from service.writer import WORK_CHANNEL

logger = logging.getLogger(__name__)


class Worker:
    """The deliverers and the job runner of one process, and the watcher that wakes them."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        scorer: CachedScorer,
        sender: EmailSender | None = None,
        job_concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._sessionmaker = sessionmaker
        self.deliverer = Deliverer(
            settings=settings,
            sessionmaker=sessionmaker,
            sender=sender if sender is not None else build_sender(settings),
            load_facts=load_evaluation_facts,
        )
        self.webhooks = WebhookDeliverer(settings=settings, sessionmaker=sessionmaker)
        self.jobs = JobRunner(
            settings=settings,
            sessionmaker=sessionmaker,
            scorer=scorer,
            concurrency=job_concurrency or settings.job_concurrency,
            after_finish=self._after_finish,
        )
        # Its result cache forgets what another process erased (no reads are cached here).
        self.erasures = ErasureWatcher(
            sessionmaker=sessionmaker,
            scorer=scorer,
            reads=None,
            poll_s=settings.erasure_poll_s,
        )
        self._wake = asyncio.Event()
        directory = wake_directory(engine.url)
        self._listener = WakeListener(directory, self._wake) if directory is not None else None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def wake(self) -> None:
        """Look for work now (work was just committed in this process)."""
        self._wake.set()

    def start(self) -> None:
        """Start delivering and scoring: at once, which is also the recovery after a crash."""
        self._stopping = False
        self.deliverer.start()
        self.webhooks.start()
        self.jobs.start()
        self.erasures.start()
        self._tasks = [asyncio.create_task(self._watch(), name="worker-watcher")]
        if self._listener is not None:
            self._listener.start()
        if self._engine.dialect.name == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen(), name="worker-listener"))

    async def stop(self) -> None:
        """Stop: deliveries in flight finish or hand their claims back, scorings are released."""
        self._stopping = True
        self._wake.set()
        if self._listener is not None:
            self._listener.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.erasures.stop()
        await self.jobs.stop()
        await self.webhooks.stop()
        await self.deliverer.stop()

    async def _after_finish(self, _evaluation_id: str, emails: bool) -> None:
        # What the outcome queued goes out now rather than at the next look.
        self.webhooks.wake()
        if emails:
            self.deliverer.wake()

    async def _watch(self) -> None:
        heartbeat = Heartbeat(self.settings.worker_heartbeat_file)
        poll_s = self.settings.worker_poll_s
        if self.settings.worker_heartbeat_file is not None:
            # The heartbeat says the database was reached lately, however long the poll.
            poll_s = min(poll_s, Heartbeat.MAX_SILENCE_S)
        # The first look is at once: the heartbeat is there as soon as the database is.
        self._wake.set()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self._sessionmaker() as session:
                    channels = await outbox.due_channels(session)
                    jobs = await jobs_repository.has_claimable(session)
            except Exception as exc:
                # The type only: a driver's message may carry a connection string.
                logger.warning("worker watch failed", extra={"error_type": type(exc).__name__})
                continue
            heartbeat.beat()
            if "email" in channels:
                self.deliverer.wake()
            if WEBHOOK_CHANNEL in channels:
                self.webhooks.wake()
            if jobs:
                self.jobs.wake()

    async def _listen(self) -> None:
        """LISTEN for the writer's NOTIFY: new work is seen at its commit, not at the poll."""
        import asyncpg  # type: ignore[import-untyped]

        url = make_url(self.settings.database_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stopping:
            connection: Any = None
            try:
                connection = await asyncpg.connect(dsn)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda *_args, lost=lost: lost.set())
                await connection.add_listener(WORK_CHANNEL, lambda *_args: self._wake.set())
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("worker listen failed", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(1)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)


class Heartbeat:
    """A file whose modification time says when the worker last reached its database."""

    INTERVAL_S = 1.0
    # The longest the watcher goes without reaching the database when a file is kept.
    MAX_SILENCE_S = 5.0

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._last = 0.0

    def beat(self) -> None:
        """Touch the file, unless it was touched less than a second ago."""
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._last < self.INTERVAL_S:
            return
        self._last = now
        try:
            self._path.touch()
        except OSError as exc:
            logger.warning("worker heartbeat not written", extra={"error_type": type(exc).__name__})


def heartbeat_age_s(settings: Settings) -> float | None:
    """Seconds since the worker's last heartbeat; None without a heartbeat file or a beat."""
    path = settings.worker_heartbeat_file
    if path is None:
        return None
    try:
        return max(time.time() - path.stat().st_mtime, 0.0)
    except OSError:
        return None


async def load_evaluation_facts(session: AsyncSession, ids: set[str]) -> dict[str, EvaluationFacts]:
    """The evaluations the deliverer renders mails from, in one query, without their relations."""
    found = await session.scalars(
        select(Evaluation)
        .where(Evaluation.id.in_(ids))
        .options(lazyload(Evaluation.reviews), lazyload(Evaluation.outbox_messages))
    )
    return {evaluation.id: evaluation for evaluation in found}


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker with clients of its own, started; stopped and closed on exit (the command)."""
    from service.cache.setup import build_cache
    from service.database import create_engine, create_sessionmaker
    from service.http import build_http_client
    from service.llm.client import LLMClient
    from service.portfolio.client import PortfolioAnalyzer
    from service.runtime import tune_gc

    engine = create_engine(settings)
    http_client = build_http_client(settings)
    cache = build_cache(settings)
    llm = LLMClient(settings=settings, http_client=http_client)
    scorer = CachedScorer(
        Scorer(
            settings=settings,
            llm=llm,
            analyzer=PortfolioAnalyzer(settings=settings, http_client=http_client),
        ),
        cache=cache,
        settings=settings,
    )
    worker = Worker(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        scorer=scorer,
        job_concurrency=min(settings.job_concurrency, llm.max_concurrency),
    )
    worker.start()
    tune_gc(settings.gc_gen0_threshold)
    try:
        yield worker
    finally:
        await worker.stop()
        await cache.close()
        await http_client.aclose()
        await engine.dispose()


async def run_until_stopped(settings: Settings) -> None:
    """The `worker` command: run until SIGTERM or SIGINT, then stop cleanly."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_worker(settings):
        logger.info("worker started")
        await stop.wait()
        logger.info("worker stopping")
