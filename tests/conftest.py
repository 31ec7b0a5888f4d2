"""Shared fixtures: a migrated database, the app with its lifespan, keys, and upstream mocks."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from aiohttp import web
from fastapi import FastAPI
from sqlalchemy import make_url

from service.auth.models import DEFAULT_TENANT
from service.auth.service import create_api_key
from service.backlog import outstanding
from service.config import Settings
from service.main import create_app
from service.migrate import upgrade
from service.worker import Worker
from tests.cache.redis_server import RedisServer, find_redis
from tests.databases import (
    POSTGRES_URL_ENV,
    Cluster,
    fresh_postgres_database,
    postgres_mode,
    start_cluster,
)

LLM_BASE_URL = "https://llm.test/v1"
ANALYZER_URL = "https://analyzer.test"


# --- databases: SQLite, or PostgreSQL with SCORER_TEST_DATABASE=postgresql (tests/databases.py)
def _cluster() -> Cluster:
    """A throwaway cluster started now, or the test skipped (failed in CI) saying why not."""
    try:
        return start_cluster()
    except RuntimeError as exc:
        server_unavailable(f"PostgreSQL: {exc}")
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session: SCORER_TEST_POSTGRES_URL, or a throwaway cluster."""
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        yield given
        return
    cluster = _cluster()
    try:
        yield cluster.dsn
    finally:
        cluster.stop()


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, never migrated, of the backend this run tests."""
    if not postgres_mode():
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_server")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> Iterator[str]:
    """A database migrated once per session, which each test's database copies (faster than
    migrating each one)."""
    with fresh_postgres_database(postgres_server) as url:
        upgrade(url)
        yield make_url(url).database or ""


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with the migrations applied."""
    if not postgres_mode():
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    with fresh_postgres_database(
        request.getfixturevalue("postgres_server"), template=template
    ) as url:
        yield url


@pytest.fixture
def stoppable_postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the test's own, which it may halt and resume (the session's is
    shared); its maintenance database is the test's to migrate."""
    cluster = _cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


# --- end databases


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Per-test setting changes; override this fixture in a module to change them."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any], tmp_path: Path) -> Settings:
    """Settings for a test: the real code paths, upstreams on unreachable test hosts."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "llm_provider": "openai",
        "llm_api_key": "sk-test",
        "llm_base_url": LLM_BASE_URL,
        "llm_model": "gpt-test",
        "portfolio_analyzer_url": ANALYZER_URL,
        "portfolio_analyzer_token": "analyzer-token",
        "http_transport": "httpx",
        "email_dir": tmp_path / "mail",
        "scoring_deadline_s": 30,
        "llm_timeout_s": 10,
        "portfolio_timeout_s": 5,
        # The suite's process hosts many apps in turn: the collector keeps Python's defaults
        # (tests/test_runtime.py checks the tuning itself, in a process of its own).
        "gc_gen0_threshold": 0,
    }
    values.update(settings_overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def serving(application: FastAPI, *, worker: bool = True) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan and, unless told not to, a worker in the same event loop.

    In production the worker is a process of its own (`interview-scorer worker`); here it
    shares the app's engine and clients, and the app's writer wakes it at each commit, so a
    test sees its mail go out without waiting for a poll. The worker's parts are on
    `app.state` as `worker`, `deliverer`, `webhooks` and `job_runner`.
    """
    async with application.router.lifespan_context(application):
        if not worker:
            yield application
            return
        state = application.state
        background = Worker(
            settings=state.settings,
            engine=state.engine,
            sessionmaker=state.sessionmaker,
            scorer=state.scorer,
        )
        state.worker = background
        state.deliverer = background.deliverer
        state.webhooks = background.webhooks
        state.job_runner = background.jobs
        state.writer.on_work = background.wake
        background.start()
        try:
            yield application
        finally:
            state.writer.on_work = None
            await background.stop()


async def settle(app: FastAPI, *, within_s: float = 15) -> None:
    """Wait until the worker has done what is due: every queued mail and webhook sent (or
    failed, a retry scheduled for later) and every queued evaluation scored. A bound on
    waiting, not a timing assertion."""
    async with asyncio.timeout(within_s):
        while True:
            async with app.state.sessionmaker() as session:
                if await outstanding(session) == 0:
                    return
            await asyncio.sleep(0.01)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The application with its lifespan running, and a worker beside it."""
    async with serving(create_app(settings)) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
        yield c


KeyMaker = Callable[..., Any]


@pytest.fixture
def make_key(app: FastAPI) -> KeyMaker:
    """Creates an API key with the given scopes and returns the auth headers for it."""

    async def make(
        *scopes: str, name: str = "test", tenant: str = DEFAULT_TENANT
    ) -> dict[str, str]:
        async with app.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(
                session, name=name, scopes=scopes or ("write", "read", "delete"), tenant=tenant
            )
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
async def auth(make_key: KeyMaker) -> dict[str, str]:
    """Headers of a key with every scope."""
    headers: dict[str, str] = await make_key()
    return headers


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    """respx intercepting every outgoing request; unmocked hosts fail the test."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def completion(
    content: dict[str, Any] | str, *, prompt_tokens: int = 100, completion_tokens: int = 50
) -> httpx.Response:
    """An OpenAI chat completion response carrying `content`."""
    text = content if isinstance(content, str) else json.dumps(content)
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-test-2026",
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def scores_content(
    scores: dict[str, int | None], *, quote: str = "For CPU-bound work the event loop gives nothing"
) -> dict[str, Any]:
    """A valid scoring answer with these scores (None abstains)."""
    return {
        "criteria": {
            key: {
                "reasoning": f"reasoning for {key}",
                "evidence": [] if score is None else [{"quote": quote}],
                "insufficient_evidence": score is None,
                "score": score,
            }
            for key, score in scores.items()
        },
        "summary": "A solid candidate.",
    }


def analysis(score: int = 80) -> httpx.Response:
    """A valid analyzer answer."""
    return httpx.Response(
        200,
        json={
            "score": score,
            "summary": "Well-structured repositories.",
            "strengths": ["tests"],
            "risks": ["few docs"],
            "languages": ["Python"],
        },
    )


def interview(**changes: Any) -> dict[str, Any]:
    """A valid request body, with top-level changes."""
    body: dict[str, Any] = {
        "candidate": {"name": "Jane Doe", "email": "jane@example.com", "external_id": "ats-4411"},
        "position": {
            "title": "Backend Engineer",
            "level": "senior",
            "description": "Python, async",
        },
        "rubric": {
            "criteria": [
                {"key": "technical_depth", "description": "Understands async I/O", "weight": 2},
                {"key": "communication", "description": "Explains clearly", "weight": 1},
            ]
        },
        "transcript": [
            {
                "question": "When would you not use asyncio?",
                "answer": "For CPU-bound work the event loop gives nothing; I would use processes.",
            }
        ],
        "portfolio": {"url": "https://github.com/janedoe"},
        "notify": {"candidate": True, "recruiters": ["lead@example.com"]},
        "language": "en",
    }
    body.update(changes)
    return body


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


@dataclass
class Delivery:
    """What a webhook receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on loopback; answers `failures` first, then 204."""

    url: str = ""
    port: int = 0
    failures: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    # Set at each delivery; while `hold` is set to an unset event, the answer waits for it.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append(Delivery(dict(request.headers), await request.read()))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.failures:
            return web.Response(status=self.failures.pop(0))
        return web.Response(status=204)


@asynccontextmanager
async def running_receiver(*, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    """A real HTTP(S) server on loopback that records the webhooks it receives at /hook."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    receiver.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    receiver.url = f"{scheme}://127.0.0.1:{receiver.port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver(upstream: respx.MockRouter) -> AsyncIterator[Receiver]:
    """A webhook receiver in the test, reached through the upstream mocks."""
    upstream.route(host="127.0.0.1").pass_through()
    async with running_receiver() as running:
        yield running


def server_unavailable(reason: str) -> None:
    """Skip a test whose server cannot be started here; in CI, fail it instead.

    CI sets SCORER_TEST_REQUIRE_SERVERS=1 after installing the servers, so a test that needs
    one is never silently skipped there."""
    if os.environ.get("SCORER_TEST_REQUIRE_SERVERS") == "1":
        pytest.fail(f"required server unavailable: {reason}")
    pytest.skip(reason)
