"""Liveness, readiness and the metrics endpoint.

Readiness runs the checks in `app.state.readiness_checks` (name -> coroutine function raising
when its dependency is not usable: the database and its migrations), whose failure takes the
replica out of the load balancer (503), and those in `app.state.degraded_checks` (the cache),
whose failure is reported while the replica keeps serving: without Redis the service scores
uncached, and a 503 from every replica would turn a cache outage into a full one.
A feature with another dependency adds its own check to one of them. The body also shows the
worker's backlog and how this process asks the LLM for structured output (`llm`: JSON mode once
a server refused `json_schema`, docs/llm-replies.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.backlog import Backlog, read_backlog
from service.errors import PROBLEM_JSON, problem_response
from service.metrics import JOBS_PENDING, OLDEST_UNCLAIMED_AGE, OUTBOX_DEPTH, render_metrics
from service.migrate import database_revision, head_revision

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 3.0

router = APIRouter(tags=["health"])


class NotReady(Exception):
    """A dependency answers but is not usable (migrations behind, say)."""


def database_checks(engine: AsyncEngine) -> dict[str, ReadinessCheck]:
    """The database answers, and its migrations are current."""

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def migrations() -> None:
        async with engine.connect() as connection:
            current = await database_revision(connection)
        if current != head_revision():
            raise NotReady(f"at {current or 'none'}, not {head_revision()}")

    return {"database": database, "migrations": migrations}


class _Pingable(Protocol):
    async def ping(self) -> bool: ...


def cache_check(cache: _Pingable) -> dict[str, ReadinessCheck]:
    """The cache answers (always, for the in-process cache)."""

    async def cache_() -> None:
        if not await cache.ping():
            raise NotReady("the cache does not answer")

    return {"cache": cache_}


async def _run(check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as exc:
        # The type only: a driver's message may carry a connection string.
        logger.warning("readiness check failed", extra={"error_type": type(exc).__name__})
        return "down"
    return "ok"


async def _backlog(request: Request) -> Backlog | None:
    """The worker's backlog, or None when the database cannot tell (readiness says why)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with request.app.state.sessionmaker() as session:
                return await read_backlog(session)
    except Exception as exc:
        logger.warning("backlog unreadable", extra={"error_type": type(exc).__name__})
        return None


@router.get("/healthz", operation_id="getLiveness", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness",
    response_model=None,
    responses={
        503: {
            "description": "The database is down or behind its migrations; `checks` names it",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    },
)
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """The database answers and its migrations are current; the cache's state and the worker's
    backlog are reported."""
    required: dict[str, ReadinessCheck] = request.app.state.readiness_checks
    optional: dict[str, ReadinessCheck] = getattr(request.app.state, "degraded_checks", {})
    checks = {**required, **optional}
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    outcome = dict(zip(checks, results, strict=True))
    backlog = await _backlog(request) if outcome.get("migrations") == "ok" else None
    down = [name for name in required if outcome[name] != "ok"]
    if down:
        body = {
            "type": "about:blank",
            "title": "Not ready",
            "status": 503,
            "detail": f"down: {', '.join(down)}",
            "checks": outcome,
        }
        return problem_response(body, status=503)
    degraded = any(outcome[name] != "ok" for name in optional)
    llm = getattr(request.app.state, "llm", None)
    return {
        "status": "degraded" if degraded else "ok",
        "checks": outcome,
        # A backlog is not a reason to stop answering: the API's part is done; it is shown.
        "worker": backlog.as_dict() if backlog is not None else None,
        # How this process asks the LLM for structured output (JSON mode after a server
        # refused json_schema); each worker process decides for itself.
        "llm": llm.structured_output() if llm is not None else None,
    }


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics, of every process; the worker's backlog read now."""
    backlog = await _backlog(request)
    if backlog is not None:
        OUTBOX_DEPTH.set(backlog.messages)
        JOBS_PENDING.set(backlog.evaluations)
        OLDEST_UNCLAIMED_AGE.set(backlog.oldest_unclaimed_age_s)
    body, content_type = await asyncio.to_thread(render_metrics)
    return Response(body, media_type=content_type)


def install_health(app: FastAPI) -> None:
    """Mount /healthz, /readyz and /metrics."""
    app.include_router(router)
