"""The floor: the least an asynchronous scorer does, the figure the service is measured against.

A FastAPI route that makes the service's two upstream calls through the same clients (the
openai SDK's AsyncOpenAI over the service's shared httpx client on the aiohttp transport, and
the analyzer call through that client), gathered, and combines them. No key check, no
validation beyond JSON, nothing stored, nothing cached, no mail.
Run: BENCH_SIMULATOR_URL=http://127.0.0.1:P uvicorn --factory bench.reference_floor:create_app
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Body, FastAPI
from openai import AsyncOpenAI

from bench.common import analyzer_request, combine, llm_request
from service.config import Settings
from service.http import build_http_client
from service.runtime import tune_gc


def create_app() -> FastAPI:
    """The floor app, calling the simulator at $BENCH_SIMULATOR_URL."""
    upstream = os.environ["BENCH_SIMULATOR_URL"].rstrip("/")
    clients: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The service's own transport and limits (service/http.py), and its SDK settings.
        settings = Settings(_env_file=None, llm_provider="simulated", http_transport="aiohttp")
        http = build_http_client(settings)
        clients["http"] = http
        # The service's process tuning too (service/runtime.py): the comparison is of the work
        # a request does, not of the collector's settings.
        tune_gc(settings.gc_gen0_threshold)
        clients["llm"] = AsyncOpenAI(
            api_key="floor",
            base_url=f"{upstream}/v1",
            # As the service does (service/llm/client.py): typed for httpx2, works with httpx.
            http_client=http,  # type: ignore[arg-type]
            max_retries=0,
            timeout=60,
        )
        try:
            yield
        finally:
            await http.aclose()

    app = FastAPI(title="floor", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/evaluations", status_code=201)
    async def evaluate(interview: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        http: httpx.AsyncClient = clients["http"]
        llm: AsyncOpenAI = clients["llm"]

        async def analysis() -> dict[str, Any]:
            response = await http.post(f"{upstream}/analyze", json=analyzer_request(interview))
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        completion, analyzed = await asyncio.gather(
            llm.chat.completions.create(**llm_request(interview)), analysis()
        )
        return combine(completion.model_dump(), analyzed)

    return app
