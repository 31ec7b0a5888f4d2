"""The service's exceptions and their RFC 9457 problem+json rendering.

ServiceError                      base: status, title, a stable type slug, a detail
    AuthenticationError           401, missing, unknown or revoked API key
    PermissionDenied              403, the key lacks the scope
    NotFound                      404
    Conflict                      409
    PayloadTooLarge               413, with the bound that was exceeded
    UnprocessableRequest          422, a request that is well-formed but cannot be processed
        TranscriptUnscorable      422, the transcript is too short or garbled to score
        MalformedBody             422, a body that is not I-JSON, naming where (service/bodies.py)
    TooManyRequests               429 with Retry-After, base of the per-key limits
        RateLimited               429, the key is over SCORER_RATE_LIMIT_PER_S
        TooManyInFlight           429, the key has SCORER_MAX_IN_FLIGHT_PER_KEY requests running
    UpstreamError                 base of the LLM failures; none of them stores anything
        LLMInvalidOutput          502, the LLM's output failed validation twice
        LLMRefused                502, the LLM refused (a `refusal`, or its content filter)
        LLMOutputTruncated        502, the LLM's answer was cut off (finish_reason length)
        LLMRejected               502, the LLM answered 4xx (a wrong key or model, say)
        LLMUnavailable            503 with Retry-After, rate limited or 5xx past the retries
        LLMTimeout                504, the LLM did not answer within the deadline
    DatabaseUnavailable           503 with Retry-After, the database cannot be reached

Request validation errors become 422 problems with an `errors` list naming each field. The
database driver's connection failures (PostgreSQL stopped or restarting, a connection cut,
the pool exhausted) become DatabaseUnavailable wherever they surface: a request that could not
reach the database stored nothing and may be sent again. Any other unexpected exception becomes
a 500 problem that reveals nothing of the request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://interview-scorer.dev/problems/"

logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    """What is wrong with one field of the request."""

    field: str = Field(description="dotted path of the field, e.g. `transcript.0.answer`")
    message: str
    type: str = Field(description="a stable code of the failed rule")


class Problem(BaseModel):
    """An RFC 9457 problem details body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://interview-scorer.dev/problems/validation",
                    "title": "Validation failed",
                    "status": 422,
                    "detail": "The request is invalid: candidate.email",
                    "instance": "/v1/evaluations",
                    "errors": [
                        {
                            "field": "candidate.email",
                            "message": "value is not a valid email address",
                            "type": "value_error",
                        }
                    ],
                }
            ]
        }
    )

    type: str = Field(description="a URI naming the kind of problem; `about:blank` for plain HTTP")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="the path of the request")
    errors: list[FieldError] | None = Field(None, description="one entry per invalid field")


class ServiceError(Exception):
    """Base of every error the API reports as a problem."""

    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details body."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        return body


class AuthenticationError(ServiceError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(ServiceError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ServiceError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ServiceError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(ServiceError):
    """A request over a size bound; `field` names what exceeded it."""

    status, title, slug = 413, "Payload too large", "payload-too-large"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.field = field

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details body, naming the field as validation errors do."""
        body = super().problem(instance)
        body["errors"] = [{"field": self.field, "message": self.detail, "type": "too_large"}]
        return body


class UnprocessableRequest(ServiceError):
    status, title, slug = 422, "Unprocessable request", "unprocessable"


class TranscriptUnscorable(UnprocessableRequest):
    """The transcript gives nothing to score; raised before any LLM call."""

    title, slug = "Transcript cannot be scored", "transcript-unscorable"

    def __init__(self, detail: str, *, rule: str) -> None:
        super().__init__(detail)
        self.rule = rule

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details body, naming the failed rule."""
        body = super().problem(instance)
        body["errors"] = [{"field": "transcript", "message": self.detail, "type": self.rule}]
        return body


class TooManyRequests(ServiceError):
    """A per-key limit (service/auth/limits.py): the request did nothing."""

    status, title, slug = 429, "Too many requests", "too-many-requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})


class RateLimited(TooManyRequests):
    slug = "rate-limited"


class TooManyInFlight(TooManyRequests):
    slug = "too-many-in-flight"


class MalformedBody(UnprocessableRequest, StarletteHTTPException):  # type: ignore[misc]
    """A body that is not I-JSON (service/bodies.py), refused before any validation.

    Also a Starlette HTTPException: FastAPI lets those out of its body reading as they are,
    where any other error would become a bare 400."""

    title, slug = "Malformed body", "malformed-body"

    def __init__(self, detail: str, *, field: str, rule: str) -> None:
        StarletteHTTPException.__init__(self, 422, detail)
        UnprocessableRequest.__init__(self, detail)
        self.field = field
        self.rule = rule

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details body, naming where the body went wrong."""
        body = super().problem(instance)
        body["errors"] = [{"field": self.field, "message": self.detail, "type": self.rule}]
        return body


class UpstreamError(ServiceError):
    """An upstream failure that stops the evaluation; nothing is stored."""


class LLMInvalidOutput(UpstreamError):
    status, title, slug = 502, "LLM output invalid", "llm-invalid-output"


class LLMRefused(UpstreamError):
    """The model declined to answer; asking again at temperature 0 gets the same refusal."""

    status, title, slug = 502, "LLM refused", "llm-refused"


class LLMOutputTruncated(UpstreamError):
    """The answer hit the server's output limit; asking again hits it again."""

    status, title, slug = 502, "LLM output cut off", "llm-output-truncated"


class LLMRejected(UpstreamError):
    status, title, slug = 502, "LLM rejected the request", "llm-rejected"


class LLMUnavailable(UpstreamError):
    status, title, slug = 503, "LLM unavailable", "llm-unavailable"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


class LLMTimeout(UpstreamError):
    status, title, slug = 504, "LLM timeout", "llm-timeout"


class DatabaseUnavailable(ServiceError):
    status, title, slug = 503, "Database unavailable", "database-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database cannot be reached; nothing was stored. Try again shortly.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )


# What a client is told to wait after DatabaseUnavailable: a database restart takes seconds.
DATABASE_RETRY_AFTER_S = 5


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached, rather than that a statement
    failed: a refused or cut connection, a server shutting down or starting up, a pool with
    no connection to give. SQLAlchemy wraps the driver's error (`orig`), and its asyncpg
    adapter wraps asyncpg's (`__cause__`): the chain is followed."""
    import asyncpg.exceptions  # type: ignore[import-untyped]
    from sqlalchemy import exc as sa

    unreachable = (
        ConnectionError,
        sa.TimeoutError,
        sa.OperationalError,
        sa.InterfaceError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InterfaceError,
    )
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, unreachable):
            return True
        if isinstance(link, sa.DBAPIError) and link.connection_invalidated:
            return True
        orig = getattr(link, "orig", None)
        link = orig if isinstance(orig, BaseException) else link.__cause__
    return False


def problem_response(
    body: dict[str, Any], *, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem+json response."""
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return problem_response(exc.problem(request.url.path), status=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body",
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    body = {
        "type": TYPE_BASE + "validation",
        "title": "Validation failed",
        "status": 422,
        "detail": f"The request is invalid: {fields}",
        "instance": request.url.path,
        "errors": jsonable_encoder(errors),
    }
    return problem_response(body, status=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "type": "about:blank",
        "title": exc.detail if isinstance(exc.detail, str) else "HTTP error",
        "status": exc.status_code,
        "detail": exc.detail if isinstance(exc.detail, str) else "",
        "instance": request.url.path,
    }
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(body, status=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the path answers (RFC 9110): Starlette's Allow names one route's only, and
    /v1/evaluations is two routes, GET and POST. Only on a 405, so probing is cheap enough."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_unreachable(exc):
        return await _unexpected_error(request, exc)
    logger.warning("database unreachable", extra={"error_type": type(exc).__name__})
    unavailable = DatabaseUnavailable()
    return problem_response(
        unavailable.problem(request.url.path), status=503, headers=unavailable.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    _log_unexpected(exc)
    return problem_response(
        ServiceError("An unexpected error occurred.").problem(request.url.path), status=500
    )


class UnexpectedErrors:
    """Answers an unhandled exception with the 500 problem from inside the middleware stack.

    Starlette's handler for Exception answers from outside every middleware, so its 500 had
    no X-Request-ID, no security headers and no CORS headers (a browser could not read it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            if database_unreachable(exc):
                unavailable = DatabaseUnavailable()
                problem = unavailable.problem(scope["path"])
                response = problem_response(problem, status=503, headers=unavailable.headers)
            else:
                _log_unexpected(exc)
                problem = ServiceError("An unexpected error occurred.").problem(scope["path"])
                response = problem_response(problem, status=500)
            await response(scope, receive, send)


def _log_unexpected(exc: Exception) -> None:
    # The exception type only: messages may carry request data.
    logger.error("unhandled error", extra={"error_type": type(exc).__name__}, exc_info=False)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as problem+json; call before adding other middleware, so that the
    500 of an unexpected error passes through them."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Before the catch-all: the database's connection failures are a 503, not a 500. The
    # driver's own errors (asyncpg's, not imported here: an API on SQLite needs none of its
    # 3 MB) reach UnexpectedErrors, which tells them apart the same way.
    from sqlalchemy.exc import SQLAlchemyError

    for kind in (SQLAlchemyError, ConnectionError):
        app.add_exception_handler(kind, _database_error)
    # A failure outside UnexpectedErrors (in a middleware) still gets a problem.
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(UnexpectedErrors)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses."""
    titles = {
        400: "The body is not JSON",
        401: "Missing, unknown or revoked API key",
        403: "The API key lacks the scope",
        404: "Not found",
        409: "Conflict",
        413: "Payload too large: a body over SCORER_MAX_BODY_BYTES (default 1,000,000 bytes; "
        "a batch's over SCORER_MAX_BATCH_BODY_BYTES, default 64,000,000), or a batch of more "
        "than SCORER_MAX_BATCH_ITEMS items (default 500)",
        422: "Validation failed (`errors` names each field), or the request cannot be scored",
        429: "A per-key limit: over SCORER_RATE_LIMIT_PER_S (`rate-limited`) or with "
        "SCORER_MAX_IN_FLIGHT_PER_KEY requests running (`too-many-in-flight`); both off by "
        "default",
        502: "LLM output invalid, refused or cut off, or the LLM rejected the request",
        503: "LLM or database unavailable (Retry-After)",
        504: "LLM timeout",
        500: "Unexpected error",
    }
    return {
        s: {
            "description": titles.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **_PROBLEM_HEADERS.get(s, {}),
        }
        for s in dict.fromkeys((*statuses, 503, 500))
    }


def header_refs(*names: str) -> dict[str, dict[str, str]]:
    """The `headers` of an OpenAPI response: references to those service/openapi.py declares."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


# The headers a problem of this status always carries.
_PROBLEM_HEADERS = {
    401: {"headers": header_refs("WWW-Authenticate")},
    429: {"headers": header_refs("Retry-After")},
    503: {"headers": header_refs("Retry-After")},
}
