"""Errors as problems: the database's connection failures are a 503 with Retry-After, never a
500 (found by the chaos run: PostgreSQL stopped under load answered 500s); the errors the
framework raises carry the headers HTTP asks for, and a 500 those of any answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.errors import install_error_handlers
from service.evaluations.models import Evaluation
from service.main import create_app
from service.migrate import upgrade
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
    serving,
)
from tests.databases import Cluster, postgres_mode, with_database

CANNOT_CONNECT = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")


def _caused_by(cause: BaseException) -> Exception:
    adapted = Exception("adapted driver error")
    adapted.__cause__ = cause
    return adapted


FAILURES: dict[str, BaseException] = {
    "refused": ConnectionRefusedError(111, "Connect call failed"),
    "starting-up": CANNOT_CONNECT,
    "cut": asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    "wrapped": OperationalError("SELECT 1", {}, ConnectionResetError()),
    # SQLAlchemy's asyncpg adapter: a DBAPIError whose driver error is caused by asyncpg's.
    "starting-up-wrapped": DBAPIError("SELECT 1", {}, _caused_by(CANNOT_CONNECT)),
}
BUGS: dict[str, BaseException] = {
    "constraint": IntegrityError("INSERT", {}, Exception("duplicate key")),
    "plain": ValueError("a bug"),
}


@pytest.fixture
def failing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail/{name}")
    async def fail(name: str) -> None:
        raise {**FAILURES, **BUGS}[name]

    return app


@pytest.mark.parametrize("name", sorted(FAILURES))
async def test_an_unreachable_database_is_a_503_with_retry_after(
    failing_app: FastAPI, name: str
) -> None:
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/fail/{name}")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["type"].endswith("/database-unavailable")
    assert "nothing was stored" in body["detail"]


@pytest.mark.parametrize("name", sorted(BUGS))
async def test_other_errors_stay_a_500_that_reveals_nothing(
    failing_app: FastAPI, name: str
) -> None:
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/fail/{name}")

    assert response.status_code == 500
    assert response.json()["detail"] == "An unexpected error occurred."
    assert "duplicate" not in response.text
    assert "a bug" not in response.text


@pytest.mark.skipif(
    not postgres_mode(), reason="PostgreSQL pass only: SQLite has no server to stop"
)
async def test_postgresql_stopped_answers_503_and_stores_nothing_then_recovers(
    stoppable_postgres: Cluster, tmp_path: Path
) -> None:
    url = with_database(stoppable_postgres.dsn, "postgres", driver="postgresql+asyncpg")
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        _env_file=None,
        database_url=url,
        llm_provider="openai",
        llm_api_key="sk-test",
        llm_base_url=LLM_BASE_URL,
        portfolio_analyzer_url=ANALYZER_URL,
        http_transport="httpx",
        email_dir=tmp_path / "mail",
        # Every request checks its key in the database: the key path meets the outage too.
        api_key_cache_s=0,
    )
    app = create_app(settings)
    with respx.mock(assert_all_called=False) as upstream:
        upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
            return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
        )
        upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
        async with serving(app, worker=False) as running:
            from service.auth.service import create_api_key

            async with running.state.sessionmaker() as session, session.begin():
                _, key = await create_api_key(session, name="outage")
            transport = httpx.ASGITransport(app=running, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"X-API-Key": key}
            ) as client:
                assert (await client.post("/v1/evaluations", json=interview())).status_code == 201

                await asyncio.to_thread(stoppable_postgres.halt)
                down = [
                    await client.post("/v1/evaluations", json=interview()),
                    await client.get("/v1/evaluations"),
                ]
                await asyncio.to_thread(stoppable_postgres.resume)
                again = await client.post("/v1/evaluations", json=interview())

    assert [r.status_code for r in down] == [503, 503]
    assert all(r.headers["retry-after"] == "5" for r in down)
    assert again.status_code == 201
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            stored = await session.scalar(select(func.count()).select_from(Evaluation))
    finally:
        await engine.dispose()
    assert stored == 2


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/evaluations", "GET, POST"),
        ("PATCH", "/v1/evaluations/e-1", "DELETE, GET"),
        ("GET", "/v1/evaluations/e-1/reviews", "POST"),
    ],
)
async def test_a_method_the_path_lacks_is_405_naming_every_method_it_has(
    client: httpx.AsyncClient, auth: dict[str, str], method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=auth)

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    # Starlette's own Allow named the first matching route's methods only ("POST").
    assert response.headers["allow"] == allow


ORIGIN = "https://ats.example.com"


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [ORIGIN]}])
async def test_an_unexpected_error_is_a_500_problem_with_the_headers_of_any_answer(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("secret request data")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as client:
        response = await client.get("/broken", headers={"Origin": ORIGIN, "X-Request-ID": "r-500"})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/internal")
    assert "secret" not in response.text
    # Starlette's own handler answered from outside every middleware, without these.
    assert response.headers["x-request-id"] == "r-500"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-content-type-options"] == "nosniff"
    assert [r.getMessage() for r in caplog.records if r.name == "service.errors"] == [
        "unhandled error"
    ]
