"""The process's shared HTTP client, and the request-body size limit."""

from __future__ import annotations

import json

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.errors import PROBLEM_JSON, PayloadTooLarge


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    """One client for both upstreams, its transport chosen by SCORER_HTTP_TRANSPORT."""
    limits = httpx.Limits(
        max_connections=settings.http_max_connections,
        max_keepalive_connections=settings.http_max_connections,
        keepalive_expiry=30,
    )
    if settings.http_transport == "aiohttp":
        connector = aiohttp.TCPConnector(
            limit=settings.http_max_connections,
            limit_per_host=settings.http_max_connections,
            keepalive_timeout=30,
        )
        transport = AiohttpTransport(client=aiohttp.ClientSession(connector=connector))
        return httpx.AsyncClient(transport=transport, limits=limits)
    return httpx.AsyncClient(limits=limits)


class BodySizeLimit:
    """Answers 413 for bodies over the limit, by Content-Length or by counting the stream."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Exact paths with a limit of their own (the batch endpoint).
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"].rstrip("/"), self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > limit:
                await self._reject(scope, send, limit)
                return
            await self.app(scope, receive, send)
            return
        # No length announced (chunked): read it all, within the limit, then replay it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._reject(scope, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _detail(self, limit: int) -> str:
        setting = (
            "SCORER_MAX_BODY_BYTES" if limit == self.max_bytes else "SCORER_MAX_BATCH_BODY_BYTES"
        )
        return f"The request body exceeds {limit} bytes ({setting})."

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        problem = PayloadTooLarge(self._detail(limit), field="body").problem(scope["path"])
        body = json.dumps(problem).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
