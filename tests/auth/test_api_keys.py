"""API keys: 401 without a valid key, 403 without the scope, hashed storage, the CLI."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import dependencies as key_dependencies
from service.auth.models import ApiKey
from service.auth.service import find_active_key_by_hash, revoke_api_key
from service.cli import main
from tests.conftest import KeyMaker, interview

ENDPOINTS = [
    ("POST", "/v1/evaluations"),
    ("GET", "/v1/evaluations"),
    ("GET", "/v1/evaluations/some-id"),
    ("DELETE", "/v1/evaluations/some-id"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer isk_not-a-real-key"},
        {"X-API-Key": "isk_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "wrong-bearer", "wrong-header", "basic"],
)
async def test_protected_endpoints_reject_a_missing_or_wrong_key(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers, json=interview())

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["title"] == "Unauthorized"


async def _revoke_the_only_key(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        key_id = (await session.scalars(select(ApiKey.id))).one()
        await revoke_api_key(session, key_id_or_prefix=key_id)


async def test_a_revoked_key_is_rejected_once_the_process_cache_expires(
    client: httpx.AsyncClient, make_key: KeyMaker, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await make_key("read")
    assert (await client.get("/v1/evaluations", headers=headers)).status_code == 200
    await _revoke_the_only_key(app)
    # Within SCORER_API_KEY_CACHE_S (5 s) the process still trusts what it verified...
    assert (await client.get("/v1/evaluations", headers=headers)).status_code == 200
    # ...and not a moment after.
    now = time.monotonic()
    monkeypatch.setattr(
        "service.auth.dependencies.time.monotonic", lambda: now + app.state.settings.api_key_cache_s
    )

    response = await client.get("/v1/evaluations", headers=headers)

    assert response.status_code == 401
    assert response.json()["detail"] == "The API key is unknown or revoked."


def _count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every database lookup of a key (the cache's misses)."""
    looked_up: list[str] = []

    async def counted(session: AsyncSession, *, digest: str) -> ApiKey | None:
        looked_up.append(digest)
        return await find_active_key_by_hash(session, digest=digest)

    monkeypatch.setattr("service.auth.dependencies.find_active_key_by_hash", counted)
    return looked_up


async def test_requests_arriving_together_share_one_lookup_of_their_key(
    client: httpx.AsyncClient, make_key: KeyMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await make_key("read")
    looked_up = _count_lookups(monkeypatch)

    responses = await asyncio.gather(
        *(client.get("/v1/evaluations", headers=headers) for _ in range(50))
    )

    assert [r.status_code for r in responses] == [200] * 50
    assert len(looked_up) == 1


async def test_a_lookup_under_way_when_a_key_is_revoked_is_not_kept(
    make_key: KeyMaker, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await make_key("read")
    key = headers["Authorization"].removeprefix("Bearer ")
    keys = app.state.keys
    looked_up = _count_lookups(monkeypatch)
    inside, release = asyncio.Event(), asyncio.Event()
    counted = key_dependencies.find_active_key_by_hash  # type: ignore[attr-defined]

    async def slow(session: AsyncSession, *, digest: str) -> ApiKey | None:
        row = await counted(session, digest=digest)
        inside.set()
        await release.wait()
        return row

    monkeypatch.setattr("service.auth.dependencies.find_active_key_by_hash", slow)
    lookup = asyncio.create_task(keys.find(key))
    await inside.wait()
    keys.forget()  # a revocation announced while the lookup was reading the old row
    release.set()
    assert await lookup is not None

    inside.clear()
    second = asyncio.create_task(keys.find(key))
    # A cached answer would never reach the database: bounded, not a hang.
    async with asyncio.timeout(10):
        await asyncio.wait(
            [second, asyncio.create_task(inside.wait())], return_when="FIRST_COMPLETED"
        )
    release.set()
    await second
    # Not answered from a cache entry made by the first lookup: the database was asked again.
    assert len(looked_up) == 2


@pytest.mark.parametrize("settings_overrides", [{"api_key_cache_s": 0}])
async def test_a_revoked_key_is_rejected_at_once_without_the_cache(
    client: httpx.AsyncClient, make_key: KeyMaker, app: FastAPI
) -> None:
    headers = await make_key("read")
    assert (await client.get("/v1/evaluations", headers=headers)).status_code == 200
    await _revoke_the_only_key(app)

    response = await client.get("/v1/evaluations", headers=headers)

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/v1/evaluations", "write"),
        ("GET", "/v1/evaluations", "read"),
        ("GET", "/v1/evaluations/some-id", "read"),
        ("DELETE", "/v1/evaluations/some-id", "delete"),
    ],
)
async def test_a_key_without_the_scope_gets_403(
    client: httpx.AsyncClient, make_key: KeyMaker, method: str, path: str, scope: str
) -> None:
    others = [s for s in ("write", "read", "delete") if s != scope]
    headers = await make_key(*others)

    response = await client.request(method, path, headers=headers, json=interview())

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert f"'{scope}'" in response.json()["detail"]


async def test_the_x_api_key_header_works_like_bearer(
    client: httpx.AsyncClient, make_key: KeyMaker
) -> None:
    bearer = await make_key("read")
    key = bearer["Authorization"].removeprefix("Bearer ")

    response = await client.get("/v1/evaluations", headers={"X-API-Key": key})

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
async def test_public_endpoints_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


async def test_keys_are_stored_hashed(make_key: KeyMaker, app: FastAPI) -> None:
    headers = await make_key()
    key = headers["Authorization"].removeprefix("Bearer ")
    async with app.state.sessionmaker() as session:
        row = (await session.scalars(select(ApiKey))).one()
    assert key not in (row.key_hash, row.prefix, row.name)
    assert key.startswith(row.prefix)
    assert len(row.key_hash) == 64


def test_cli_creates_lists_and_revokes_keys(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCORER_DATABASE_URL", database_url)

    assert main(["api-keys", "create", "frontend", "--scopes", "read", "write"]) == 0
    created = capsys.readouterr().out
    key = created.strip().splitlines()[-1]
    assert key.startswith("isk_")
    assert "scopes: write read" in created

    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "frontend" in listing
    assert "active" in listing
    assert key not in listing

    prefix = key[:10]
    assert main(["api-keys", "revoke", prefix]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["api-keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out

    assert main(["api-keys", "revoke", "no-such-key"]) == 1
    assert "no key no-such-key" in capsys.readouterr().err


async def test_cli_created_key_authenticates(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
) -> None:
    monkeypatch.setenv("SCORER_DATABASE_URL", database_url)
    # The CLI runs its own event loop; keep it off this test's loop.
    assert await asyncio.to_thread(main, ["api-keys", "create", "reader", "--scopes", "read"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]

    assert (await client.get("/v1/evaluations", headers={"X-API-Key": key})).status_code == 200
    response = await client.post("/v1/evaluations", headers={"X-API-Key": key}, json=interview())
    assert response.status_code == 403
