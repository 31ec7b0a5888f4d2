"""Errors the framework raises are problems too, with the headers HTTP asks for."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI


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


ORIGIN = "https://ats.example.com"


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [ORIGIN]}])
async def test_an_unexpected_error_is_a_500_problem_with_the_headers_of_any_answer(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("secret request data")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as client:
        response = await client.get("/broken", headers={"Origin": ORIGIN, "X-Request-ID": "r-500"})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/internal")
    assert "secret" not in response.text
    # Starlette's own handler answered from outside every middleware, without these.
    assert response.headers["x-request-id"] == "r-500"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-content-type-options"] == "nosniff"
    assert [r.getMessage() for r in caplog.records if r.name == "service.errors"] == [
        "unhandled error"
    ]
