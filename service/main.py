"""The application factory; the lifespan builds and closes every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.auth.dependencies import KeyCache
from service.auth.limits import InFlightRelease, KeyLimits
from service.batches.router import router as batches_router
from service.cache.setup import open_cache
from service.config import Settings, load_settings
from service.context import AppContext
from service.database import create_engine, create_sessionmaker
from service.docs import install_docs
from service.errors import install_error_handlers
from service.evaluations.cached import CachedScorer
from service.evaluations.erasures import ErasureWatcher
from service.evaluations.router import router as evaluations_router
from service.evaluations.scorer import Scorer
from service.health import cache_check, database_checks, install_health
from service.http import BodySizeLimit, build_http_client
from service.llm.client import LLMClient
from service.metrics import worker_exited
from service.middleware import RequestObservability, SecurityHeaders
from service.openapi import build_openapi
from service.portfolio.client import PortfolioAnalyzer
from service.reviews.router import router as reviews_router
from service.runtime import tune_gc
from service.webhooks.router import webhooks
from service.writer import GroupWriter

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
        sessionmaker = create_sessionmaker(engine)
        cache, reads_cached = await open_cache(settings)
        scorer = CachedScorer(
            Scorer(settings=settings, llm=llm, analyzer=analyzer), cache=cache, settings=settings
        )
        writer = GroupWriter(
            engine,
            max_delay_s=settings.write_group_delay_s,
            max_rows=settings.write_group_max_rows,
        )
        keys = KeyCache(sessionmaker=sessionmaker, ttl_s=settings.api_key_cache_s)
        if cache.redis is not None:
            keys.listen(cache.redis)
        # What other processes erase, this one forgets within SCORER_ERASURE_POLL_S.
        erasures = ErasureWatcher(
            sessionmaker=sessionmaker,
            scorer=scorer,
            reads=cache if reads_cached else None,
            poll_s=settings.erasure_poll_s,
        )
        context = AppContext(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            http_client=http_client,
            cache=cache,
            scorer=scorer,
            writer=writer,
            keys=keys,
            reads_cached=reads_cached,
        )
        # The API process only answers: mail, webhooks and background scoring are the
        # worker's (service/worker.py), which finds the rows this process writes.
        app.state.context = context
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.cache = cache
        app.state.scorer = scorer
        app.state.llm = llm
        app.state.writer = writer
        app.state.keys = keys
        app.state.erasures = erasures
        writer.start()
        erasures.start()
        # Last: what start-up built is frozen out of the collector's work.
        tune_gc(settings.gc_gen0_threshold)
        # --- deploy: readiness checks (other features add theirs to these dicts)
        app.state.readiness_checks = database_checks(engine)
        app.state.degraded_checks = cache_check(cache)
        # --- end deploy
        try:
            yield
        finally:
            await erasures.stop()
            await writer.stop()
            await keys.close()
            await cache.close()
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
    limits = KeyLimits(
        rate_per_s=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst,
        max_in_flight=settings.max_in_flight_per_key,
    )
    # Read by the API-key dependency: None costs the request nothing.
    app.state.limits = limits if limits.enabled else None
    if limits.max_in_flight:
        app.add_middleware(InFlightRelease, limits=limits)
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
            expose_headers=[
                "Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed",
                "Preference-Applied",
            ],
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
    app.webhooks.include_router(webhooks)

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def openapi_document() -> dict[str, Any]:
    """The code's OpenAPI document: what the committed openapi.json must equal."""
    settings = Settings(_env_file=None, llm_provider="simulated")
    return create_app(settings).openapi()
