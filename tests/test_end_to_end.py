"""The whole path over real loopback HTTP: uvicorn serving the app, the aiohttp transport,
the simulators as the LLM and the analyzer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from service.auth.service import create_api_key
from service.config import Settings
from service.database import create_engine, create_sessionmaker
from service.devtools.simulator import SimulatorConfig, start_simulator
from service.main import create_app
from tests.conftest import interview
from tests.servers import free_port


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """uvicorn serving the app on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(
    params=[SimulatorConfig(0.05, 0.02), SimulatorConfig(0.05, 0.02, failure_rate=1.0)],
    ids=["analyzer-healthy", "analyzer-down"],
)
async def analyzer(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, SimulatorConfig]]:
    """A simulator serving as the analyzer (its LLM half is unused)."""
    config: SimulatorConfig = request.param
    runner, port = await start_simulator(config)
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        await runner.cleanup()


async def test_scores_over_real_http_with_the_aiohttp_transport(
    database_url: str, tmp_path: Path, analyzer: tuple[str, SimulatorConfig]
) -> None:
    analyzer_url, config = analyzer
    llm_runner, llm_port = await start_simulator(SimulatorConfig(0.05, 0.02))
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        llm_provider="simulated",
        llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
        portfolio_analyzer_url=analyzer_url,
        http_transport="aiohttp",
        email_dir=tmp_path / "mail",
    )
    engine = create_engine(settings)
    async with create_sessionmaker(engine)() as session, session.begin():
        _, key = await create_api_key(session, name="e2e")
    await engine.dispose()
    try:
        async with (
            serve(settings) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            # Distinct interviews: identical ones would share one LLM call (tests/cache).
            bodies = [interview(position={"title": f"Engineer {i}"}) for i in range(20)]
            responses = await asyncio.gather(
                *(
                    client.post("/v1/evaluations", json=body, headers={"X-API-Key": key})
                    for body in bodies
                )
            )
            stats = (await client.get(f"http://127.0.0.1:{llm_port}/stats")).json()
    finally:
        await llm_runner.cleanup()

    assert [r.status_code for r in responses] == [201] * 20
    body: dict[str, Any] = responses[0].json()
    assert body["model"] == "simulated"
    assert all(c["score"] in {1, 2, 3, 4, 5} for c in body["criteria"])
    assert all(e["verified"] for c in body["criteria"] for e in c["evidence"])
    assert stats["llm_calls"] == 20
    if config.failure_rate:
        assert body["partial"] is True
        assert body["portfolio"]["status"] == "unavailable"
    else:
        assert body["partial"] is False
        assert body["portfolio"]["status"] == "ok"
        assert 0 <= body["portfolio"]["score"] <= 100
