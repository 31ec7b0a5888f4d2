"""The deployment under chaos, all on loopback: the database, Redis, an SMTP server, the two
simulated upstreams, the API (`serve --no-worker`) and a worker (`interview-scorer worker`),
each a process the run can stop, kill and start again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.processes import wait_healthy
from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.migrate import upgrade
from tests.cache.redis_server import RedisServer, find_redis
from tests.databases import Cluster, start_cluster, with_database
from tests.servers import Process, free_port, healthy


@dataclass(frozen=True)
class Profile:
    """How hard and how long: the full run (`make chaos`) or the suite's reduced one."""

    name: str
    in_flight: int
    llm_latency_s: float
    analyzer_latency_s: float
    # Load before the first fault, the length of a fault with a duration (the LLM's errors,
    # the analyzer's hang), and the load after each fault is healed, before the next.
    baseline_s: float
    fault_s: float
    settle_s: float
    postgres_down_s: float
    smtp_down_s: float
    # The leases of mails and jobs: a killed worker's claims are taken up after this.
    lease_s: float
    portfolio_timeout_s: float
    # A bound on waiting for the worker to finish what the load left, after the load stops.
    drain_s: float


FULL = Profile(
    name="full",
    in_flight=200,
    llm_latency_s=1.0,
    analyzer_latency_s=0.5,
    baseline_s=10,
    fault_s=15,
    settle_s=10,
    postgres_down_s=10,
    smtp_down_s=30,
    lease_s=10,
    portfolio_timeout_s=2,
    drain_s=300,
)
REDUCED = Profile(
    name="reduced",
    in_flight=30,
    llm_latency_s=0.2,
    analyzer_latency_s=0.1,
    baseline_s=2,
    fault_s=3,
    settle_s=2,
    postgres_down_s=3,
    smtp_down_s=3,
    lease_s=6,
    portfolio_timeout_s=0.5,
    drain_s=120,
)


class Stack:
    """Every server of the run; `start()` once, `close()` always (also after a failure)."""

    def __init__(self, *, profile: Profile, database: str, workdir: Path) -> None:
        if database not in ("sqlite", "postgresql"):
            raise ValueError("database is sqlite or postgresql")
        redis = find_redis()
        if redis is None:
            raise RuntimeError("redis-server is not installed")
        self.profile = profile
        self.database = database
        self.workdir = workdir
        self.redis = RedisServer(redis)
        self.cluster: Cluster | None = None
        self.database_url = ""
        self.api_key = ""
        self.smtp_port = free_port()
        self.llm_port = free_port()
        self.analyzer_port = free_port()
        self.api_port = free_port()
        self.sink_log = workdir / "smtp-received.txt"
        self._exits = contextlib.ExitStack()
        self.sink = Process(
            ["--port", str(self.smtp_port), "--out", str(self.sink_log)],
            dict(os.environ),
            workdir / "smtp.log",
            module="bench.chaos.sink",
        )
        self.llm = self._simulator(self.llm_port, "llm")
        self.analyzer = self._simulator(self.analyzer_port, "analyzer")
        self.api = Process(
            ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(self.api_port)],
            {},
            workdir / "api.log",
        )
        self.worker = Process(["worker"], {}, workdir / "worker.log")
        self._processes = [self.sink, self.llm, self.analyzer, self.api, self.worker]

    def _simulator(self, port: int, name: str) -> Process:
        latencies = [
            "--llm-latency",
            str(self.profile.llm_latency_s),
            "--analyzer-latency",
            str(self.profile.analyzer_latency_s),
        ]
        return Process(
            ["simulate", "--port", str(port), *latencies],
            dict(os.environ),
            self.workdir / f"simulate-{name}.log",
        )

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def service_env(self) -> dict[str, str]:
        """The API's and the worker's environment: this run's servers and leases."""
        lease = self.profile.lease_s
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("SCORER_")},
            "SCORER_DATABASE_URL": self.database_url,
            "SCORER_REDIS_URL": self.redis.url,
            "SCORER_LLM_PROVIDER": "simulated",
            "SCORER_LLM_BASE_URL": f"http://127.0.0.1:{self.llm_port}/v1",
            "SCORER_PORTFOLIO_ANALYZER_URL": f"http://127.0.0.1:{self.analyzer_port}",
            "SCORER_PORTFOLIO_TIMEOUT_S": str(self.profile.portfolio_timeout_s),
            "SCORER_EMAIL_BACKEND": "smtp",
            "SCORER_SMTP_HOST": "127.0.0.1",
            "SCORER_SMTP_PORT": str(self.smtp_port),
            "SCORER_SMTP_TLS": "none",
            "SCORER_SMTP_TIMEOUT_S": str(lease / 3),
            "SCORER_EMAIL_LEASE_S": str(lease),
            "SCORER_EMAIL_SWEEP_INTERVAL_S": str(lease),
            # Retries outlast the SMTP outage (equal jitter: at least 45 s over 8 attempts).
            "SCORER_EMAIL_BACKOFF_BASE_S": "2",
            "SCORER_EMAIL_BACKOFF_CAP_S": "20",
            "SCORER_JOB_LEASE_S": str(lease),
            "SCORER_JOB_POLL_INTERVAL_S": "1",
            "SCORER_WORKERS": "1",
            "SCORER_LOG_LEVEL": "warning",
        }

    def start(self) -> None:
        """Start every server, migrate, make an API key, and wait until the API is healthy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self._exits.callback(self.redis.stop)
        if self.database == "postgresql":
            self.cluster = start_cluster()
            self._exits.callback(self.cluster.stop)
            # The cluster is this run's alone and thrown away after it.
            self.database_url = with_database(
                self.cluster.dsn, "postgres", driver="postgresql+asyncpg"
            )
        else:
            self.database_url = f"sqlite+aiosqlite:///{self.workdir / 'chaos.db'}"
        upgrade(self.database_url)
        self.api_key = asyncio.run(self._create_key())
        env = self.service_env()
        self.api.env = self.worker.env = env
        self._exits.callback(self._stop_processes)
        for process in self._processes:
            process.start()
        asyncio.run(healthy(self.base_url, within_s=60))
        for port, simulator in ((self.llm_port, self.llm), (self.analyzer_port, self.analyzer)):
            assert simulator.child is not None
            wait_healthy(f"http://127.0.0.1:{port}/healthz", simulator.child)

    def _stop_processes(self) -> None:
        for process in reversed(self._processes):
            process.stop()

    def close(self) -> None:
        """Stop everything this run started."""
        self._exits.close()

    async def _create_key(self) -> str:
        settings = Settings(
            _env_file=None, database_url=self.database_url, llm_provider="simulated"
        )
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                _, key = await create_api_key(session, name="chaos")
        finally:
            await engine.dispose()
        return key

    async def set_upstream(self, port: int, **knobs: float) -> None:
        """Change a simulator's latencies or failure rates while it runs."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/control", data=json.dumps(knobs).encode(), method="POST"
        )

        def post() -> None:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()

        await asyncio.to_thread(post)
