"""The application factory; the lifespan builds and closes every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from service import __version__
from service.batches.router import router as batches_router
from service.cache.reads import invalidate_reads
from service.cache.result import CachedScorer
from service.cache.setup import close_cache, open_cache
from service.config import Settings, load_settings
from service.database import create_engine, create_sessionmaker
from service.docs import install_docs
from service.errors import Problem, install_error_handlers
from service.evaluations.router import router as evaluations_router
from service.health import cache_check, database_checks, install_health
from service.http import BodySizeLimit, build_http_client
from service.jobs.runner import JobRunner
from service.llm.client import LLMClient
from service.metrics import worker_exited
from service.middleware import RequestObservability, SecurityHeaders
from service.notifications.delivery import Deliverer
from service.notifications.sender import build_sender
from service.portfolio.client import PortfolioAnalyzer
from service.reviews.router import router as reviews_router
from service.webhooks.delivery import WebhookDeliverer

DESCRIPTION = """\
Scores job interviews with an LLM and a portfolio analyzer, concurrently.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`; keys are made with
`interview-scorer api-keys create`. Every error is an RFC 9457 problem (`application/problem+json`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application for `settings` (read from the environment when omitted)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        http_client = build_http_client(settings)
        llm = LLMClient(settings=settings, http_client=http_client)
        analyzer = PortfolioAnalyzer(settings=settings, http_client=http_client)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.http_client = http_client
        # Caching (issue 3): the scorer answers repeats from the cache and coalesces.
        cache = await open_cache(app, settings)
        app.state.scorer = CachedScorer(settings=settings, llm=llm, analyzer=analyzer, cache=cache)

        # Emails (service/notifications): the outbox's deliverer and its sweeper; a mail's new
        # status makes the evaluation's cached reads stale.
        async def on_change(evaluation_id: str) -> None:
            await invalidate_reads(cache, evaluation_id=evaluation_id)

        deliverer = Deliverer(
            settings=settings,
            sessionmaker=app.state.sessionmaker,
            sender=build_sender(settings),
            on_change=on_change,
        )
        app.state.deliverer = deliverer
        deliverer.start()
        # Asynchronous evaluations and batches: started here, which resumes what a previous
        # process left pending; stopped before the clients it uses are closed.
        webhooks = WebhookDeliverer(
            settings=settings, sessionmaker=app.state.sessionmaker, http_client=http_client
        )

        async def after_finish(evaluation_id: str, emails: bool) -> None:
            # A poll must see the outcome, not a cached "pending"; what the outcome queued
            # (follow-up emails, webhooks) goes out now rather than at the next sweep.
            await invalidate_reads(cache, evaluation_id=evaluation_id)
            webhooks.wake()
            if emails:
                await deliverer.deliver_evaluation(evaluation_id)

        job_runner = JobRunner(
            settings=settings,
            sessionmaker=app.state.sessionmaker,
            scorer=app.state.scorer,
            concurrency=min(settings.job_concurrency, llm.max_concurrency),
            after_finish=after_finish,
        )
        app.state.job_runner = job_runner
        app.state.webhooks = webhooks
        webhooks.start()
        job_runner.start()
        # --- deploy: readiness checks (other features add theirs to these dicts)
        app.state.readiness_checks = database_checks(engine)
        app.state.degraded_checks = cache_check(cache)
        # --- end deploy
        try:
            yield
        finally:
            await job_runner.stop()
            await webhooks.stop()
            await deliverer.stop()
            await close_cache(app)
            await http_client.aclose()
            await engine.dispose()
            worker_exited()

    app = FastAPI(
        title="Interview Scorer",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by install_docs from the service's own assets (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        # A batch carries up to SCORER_MAX_BATCH_ITEMS interviews: its own, larger bound.
        path_limits={"/v1/evaluation-batches": settings.max_batch_body_bytes},
    )
    # --- deploy: CORS, security headers, request ids/access log/metrics (outermost, added last)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "Prefer",
                "X-Request-ID",
            ],
            expose_headers=["Location", "Retry-After", "X-Request-ID"],
            max_age=600,
        )  # fmt: skip
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestObservability)
    install_health(app)
    install_docs(app)
    # --- end deploy
    app.include_router(evaluations_router)
    app.include_router(reviews_router)
    app.include_router(batches_router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def openapi_document() -> dict[str, Any]:
    """The code's OpenAPI document: what the committed openapi.json must equal."""
    settings = Settings(_env_file=None, llm_provider="simulated")
    return create_app(settings).openapi()
