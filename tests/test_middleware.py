"""Security headers on every response, and CORS for the configured frontend origins only."""

from __future__ import annotations

import httpx
import pytest

FRONTEND = "https://review.example.com"


async def test_api_responses_carry_security_headers(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for response in (
        await client.get("/v1/evaluations", headers=auth),
        await client.get("/v1/evaluations"),  # 401
        await client.get("/healthz"),
    ):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        # Cached reads tell browsers to revalidate every time (service/cache/reads.py); every
        # other API response must not be stored at all. Neither lets a shared cache keep it.
        assert headers["cache-control"] in ("no-store", "private, no-cache")
    assert (await client.get("/healthz")).headers["cache-control"] == "no-store"
    assert (await client.get("/v1/evaluations")).headers["cache-control"] == "no-store"


async def test_docs_policy_allows_only_the_service_itself(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    asset = await client.get("/static/swagger-ui.css")

    policy = docs.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "http" not in policy
    assert asset.status_code == 200
    assert asset.headers["content-security-policy"] == policy
    assert "no-store" not in asset.headers.get("cache-control", "")


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [FRONTEND]}])
async def test_cors_allows_the_configured_frontend(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    preflight = await client.options(
        "/v1/evaluations",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    actual = await client.get("/v1/evaluations", headers={**auth, "Origin": FRONTEND})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONTEND
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert actual.headers["access-control-allow-origin"] == FRONTEND
    assert "X-Request-ID" in actual.headers["access-control-expose-headers"]


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [FRONTEND]}])
async def test_cors_refuses_other_origins(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    preflight = await client.options(
        "/v1/evaluations",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    actual = await client.get("/v1/evaluations", headers={**auth, "Origin": "https://evil.example"})

    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in actual.headers


async def test_no_cors_without_configured_origins(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    actual = await client.get("/v1/evaluations", headers={**auth, "Origin": FRONTEND})
    assert "access-control-allow-origin" not in actual.headers
