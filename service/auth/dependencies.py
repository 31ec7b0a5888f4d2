"""The API key check of every protected endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.models import ApiKey
from service.auth.service import find_active_key
from service.errors import AuthenticationError, PermissionDenied

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that returns the caller's key, or fails with 401 or 403."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header_key: Annotated[str | None, Security(_header)],
    ) -> ApiKey:
        key = bearer.credentials if bearer else header_key
        if not key:
            raise AuthenticationError(
                "An API key is required (Authorization: Bearer or X-API-Key)."
            )
        # Its own short session: the request's session must not hold a connection from here
        # through the upstream calls.
        sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        async with sessionmaker() as session:
            api_key = await find_active_key(session, key=key)
        if api_key is None:
            raise AuthenticationError("The API key is unknown or revoked.")
        if scope not in api_key.scope_set:
            raise PermissionDenied(f"The API key lacks the '{scope}' scope.")
        return api_key

    return dependency


WriteKey = Annotated[ApiKey, Depends(require_scope("write"))]
ReadKey = Annotated[ApiKey, Depends(require_scope("read"))]
DeleteKey = Annotated[ApiKey, Depends(require_scope("delete"))]
