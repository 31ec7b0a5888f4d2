"""Errors the framework raises are problems too, with the headers HTTP asks for."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/evaluations", "GET, POST"),
        ("PATCH", "/v1/evaluations/e-1", "DELETE, GET"),
        ("GET", "/v1/evaluations/e-1/reviews", "POST"),
    ],
)
async def test_a_method_the_path_lacks_is_405_naming_every_method_it_has(
    client: httpx.AsyncClient, auth: dict[str, str], method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=auth)

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    # Starlette's own Allow named the first matching route's methods only ("POST").
    assert response.headers["allow"] == allow
