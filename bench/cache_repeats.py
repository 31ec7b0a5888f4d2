"""50 identical, 50 distinct, then 50 repeated concurrent POSTs against the simulator.

Prints the upstream LLM calls each burst caused and its wall time. In-process (ASGI), the
simulator answering in 1.0 s (LLM) and 0.5 s (analyzer) over real HTTP (aiohttp transport).

    .venv/bin/python bench/cache_repeats.py                            # in-process cache
    .venv/bin/python bench/cache_repeats.py redis://127.0.0.1:6379/0   # Redis
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.auth.service import create_api_key
from service.config import Settings
from service.devtools.simulator import SimulatorConfig, start_simulator
from service.main import create_app
from service.migrate import upgrade
from tests.conftest import interview


async def run(database_url: str, redis_url: str | None, workdir: Path) -> None:
    runner, port = await start_simulator(SimulatorConfig(1.0, 0.5))
    simulator = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=redis_url,
        llm_provider="simulated",
        llm_base_url=f"{simulator}/v1",
        portfolio_analyzer_url=simulator,
        http_transport="aiohttp",
        email_dir=workdir / "mail",
    )
    app = create_app(settings)
    bursts = [
        ("identical", [interview()] * 50),
        ("distinct", [interview(position={"title": f"Engineer {i}"}) for i in range(50)]),
        ("repeated", [interview()] * 50),
    ]
    try:
        async with app.router.lifespan_context(app):
            async with app.state.sessionmaker() as session, session.begin():
                _, key = await create_api_key(session, name="bench")
            transport = httpx.ASGITransport(app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://x", timeout=60) as api,
                httpx.AsyncClient() as raw,
            ):
                for label, bodies in bursts:
                    before = (await raw.get(f"{simulator}/stats")).json()["llm_calls"]
                    started = time.perf_counter()
                    responses = await asyncio.gather(
                        *(
                            api.post("/v1/evaluations", json=b, headers={"X-API-Key": key})
                            for b in bodies
                        )
                    )
                    took = time.perf_counter() - started
                    calls = (await raw.get(f"{simulator}/stats")).json()["llm_calls"] - before
                    statuses = sorted({r.status_code for r in responses})
                    print(f"{label:10s} statuses={statuses} llm_calls={calls} wall={took:.2f}s")
    finally:
        await runner.cleanup()


def main() -> None:
    redis_url = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        upgrade(database_url)
        print(f"backend={'redis' if redis_url else 'memory'}")
        asyncio.run(run(database_url, redis_url, workdir))


if __name__ == "__main__":
    main()
