"""Reference design 1: a sequential synchronous endpoint.

A `def` route: FastAPI runs it in its 40-thread pool; it calls the LLM, then the analyzer, with
`requests`. No database, cache or email: only the upstream calls, so that it is the best case of
this design. Run: BENCH_SIMULATOR_URL=http://127.0.0.1:P uvicorn --factory
bench.reference_sync:create_app --port Q
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import requests
from fastapi import Body, FastAPI

from bench.common import analyzer_request, combine, llm_request


def create_app() -> FastAPI:
    """The sync reference app, calling the simulator at $BENCH_SIMULATOR_URL."""
    upstream = os.environ["BENCH_SIMULATOR_URL"].rstrip("/")
    app = FastAPI(title="sync reference")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/evaluations", status_code=201)
    def evaluate(interview: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        completion = requests.post(
            f"{upstream}/v1/chat/completions", json=llm_request(interview), timeout=60
        )
        completion.raise_for_status()
        analysis = requests.post(
            f"{upstream}/analyze", json=analyzer_request(interview), timeout=60
        )
        analysis.raise_for_status()
        return combine(completion.json(), analysis.json())

    return app
