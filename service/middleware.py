"""Pure-ASGI middleware: request ids, the access log, request metrics and security headers.

Pure ASGI rather than BaseHTTPMiddleware, which costs a task and a stream per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import HTTP_IN_FLIGHT, http_metrics, route_of

access_log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode()
# A caller's id is kept only when it is short and plain, so it cannot forge log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes would drown the access log at info.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestObservability:
    """Gives each request an id (X-Request-ID, kept or made, and returned), logs one access line
    (method, route template, status, duration; never the URL or a body) and records metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        rid = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()
        done = False

        def finish() -> None:
            # Once, when the response's last byte is sent: background tasks that run after
            # it (the emails' fast path) are not the client's wait.
            nonlocal done
            if done:
                return
            done = True
            HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = route_of(scope)
            requests, latency = http_metrics(scope["method"], route, status)
            requests.inc()
            latency.observe(elapsed)
            access_log.log(
                logging.DEBUG if route in _QUIET_ROUTES else logging.INFO,
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appended raw: no response of the service sets it itself.
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID_RAW, rid.encode())]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            finish()
            request_id.reset(token)


# The API serves JSON only: nothing may run, load or frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The self-hosted Swagger UI and ReDoc: assets from this service only (no CDN), their inline
# bootstrap script, data: images, and ReDoc's blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
STATIC_PREFIX = "/static/"


def _security_headers(csp: str, *, cache_control: str | None) -> tuple[tuple[bytes, bytes], ...]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
    ]
    if cache_control is not None:
        headers.append((b"cache-control", cache_control.encode()))
    return tuple(headers)


_API_HEADERS = _security_headers(API_CSP, cache_control="no-store")
_DOCS_HEADERS = _security_headers(DOCS_CSP, cache_control="no-store")
# Static assets (the docs' scripts and styles) may be cached by the browser.
_STATIC_HEADERS = _security_headers(DOCS_CSP, cache_control=None)


class SecurityHeaders:
    """Adds nosniff, no-referrer, DENY framing, a CSP, and no-store on API responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        is_docs = path.startswith(DOCS_PATHS)
        is_static = path.startswith(STATIC_PREFIX)
        added = _DOCS_HEADERS if is_docs else _STATIC_HEADERS if is_static else _API_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Raw header pairs, each added unless the response set it (starlette's
                # MutableHeaders.setdefault scans every header once per call).
                raw = message["headers"] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                raw.extend(pair for pair in added if pair[0] not in present)
            await send(message)

        await self.app(scope, receive, send_with_headers)
