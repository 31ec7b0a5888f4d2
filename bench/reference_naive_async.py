"""Reference design 2: a naive asynchronous endpoint.

An `async def` route that awaits the LLM, then the analyzer, one after the other, through one
shared `httpx.AsyncClient` with its default transport and pool. No database, cache or email.
Run: BENCH_SIMULATOR_URL=http://127.0.0.1:P uvicorn --factory
bench.reference_naive_async:create_app --port Q
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Body, FastAPI

from bench.common import analyzer_request, combine, llm_request


def create_app() -> FastAPI:
    """The naive async reference app, calling the simulator at $BENCH_SIMULATOR_URL."""
    upstream = os.environ["BENCH_SIMULATOR_URL"].rstrip("/")
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # httpx's defaults, the naive part: a 100-connection pool, and 5 s to get a connection.
        async with httpx.AsyncClient() as client:
            clients["http"] = client
            yield

    app = FastAPI(title="naive async reference", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/evaluations", status_code=201)
    async def evaluate(interview: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        http = clients["http"]
        completion = await http.post(f"{upstream}/v1/chat/completions", json=llm_request(interview))
        completion.raise_for_status()
        analysis = await http.post(f"{upstream}/analyze", json=analyzer_request(interview))
        analysis.raise_for_status()
        return combine(completion.json(), analysis.json())

    return app
