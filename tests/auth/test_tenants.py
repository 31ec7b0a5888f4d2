"""Tenants: a key sees its own tenant's evaluations, batches and replays, and nothing else.

Each test runs with the read cache off, in process and in Redis, so that no cached copy can
carry one tenant's data to another."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select

from service.cli import main
from service.evaluations.models import Evaluation
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    KeyMaker,
    analysis,
    completion,
    interview,
    scores_content,
    settle,
)

CHAT = f"{LLM_BASE_URL}/chat/completions"


@pytest.fixture(params=["off", "memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Reads uncached, cached in process, cached in Redis."""
    if request.param == "off":
        return {"cache_ttl_s": 0}
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis").url}
    return {}


@pytest.fixture
def llm(upstream: respx.MockRouter) -> respx.Route:
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    return upstream.post(CHAT).mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )


@pytest.fixture
async def acme(make_key: KeyMaker) -> dict[str, str]:
    headers: dict[str, str] = await make_key(name="acme", tenant="acme")
    return headers


@pytest.fixture
async def globex(make_key: KeyMaker) -> dict[str, str]:
    headers: dict[str, str] = await make_key(name="globex", tenant="globex")
    return headers


def cached(app: FastAPI) -> bool:
    return bool(app.state.context.reads_cached)


async def test_another_tenants_evaluation_is_not_found_however_it_is_asked_for(
    client: httpx.AsyncClient,
    app: FastAPI,
    llm: respx.Route,
    acme: dict[str, str],
    globex: dict[str, str],
) -> None:
    # No mail: its view is final at once, so acme's reads are cached when the cache is on.
    created = await client.post("/v1/evaluations", json=interview(notify=None), headers=acme)
    assert created.status_code == 201
    url = created.headers["location"]
    for _ in range(2):
        mine = await client.get(url, headers=acme)
        assert mine.status_code == 200
        assert (await client.get("/v1/evaluations", headers=acme)).json()["items"]
    if cached(app):
        assert mine.headers["x-fastapi-cache"] == "HIT"
    unknown = await client.get("/v1/evaluations/no-such-id", headers=globex)

    theirs = [
        await client.get(url, headers=globex),
        await client.get(url, params={"include": "provenance"}, headers=globex),
        await client.post(
            f"{url}/reviews", json={"decision": "no_hire", "reason": "mine now"}, headers=globex
        ),
        await client.delete(url, headers=globex),
    ]
    listed = await client.get("/v1/evaluations", headers=globex)

    assert [r.status_code for r in theirs] == [404] * 4
    assert {r.json()["detail"] for r in theirs} == {f"No evaluation {created.json()['id']}."}
    assert theirs[0].json()["title"] == unknown.json()["title"]
    assert "Jane" not in "".join(r.text for r in theirs)
    assert listed.status_code == 200
    assert listed.json() == {"items": [], "next_cursor": None}
    # Untouched for its own tenant: not erased, not reviewed.
    again = await client.get(url, headers=acme)
    assert again.status_code == 200
    assert again.json()["review"] is None
    assert len((await client.get("/v1/evaluations", headers=acme)).json()["items"]) == 1


async def test_each_tenant_lists_only_its_own(
    client: httpx.AsyncClient, llm: respx.Route, acme: dict[str, str], globex: dict[str, str]
) -> None:
    ours = [
        (await client.post("/v1/evaluations", json=interview(notify=None), headers=acme)).json()
        for _ in range(3)
    ]
    theirs = (
        await client.post("/v1/evaluations", json=interview(notify=None), headers=globex)
    ).json()

    async def listed(headers: dict[str, str], **params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = {"limit": 2, **params} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/evaluations", params=query, headers=headers)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    for _ in range(2):  # the second time from the cache, when it is on
        assert await listed(acme) == [e["id"] for e in reversed(ours)]
        assert await listed(globex) == [theirs["id"]]
        assert await listed(globex, candidate_email="jane@example.com") == [theirs["id"]]


async def test_a_new_evaluation_of_one_tenant_does_not_reach_anothers_cached_list(
    client: httpx.AsyncClient, llm: respx.Route, acme: dict[str, str], globex: dict[str, str]
) -> None:
    empty = await client.get("/v1/evaluations", headers=globex)
    await client.post("/v1/evaluations", json=interview(notify=None), headers=acme)
    await client.post("/v1/evaluations", json=interview(notify=None), headers=globex)

    assert empty.json()["items"] == []
    assert len((await client.get("/v1/evaluations", headers=globex)).json()["items"]) == 1
    assert len((await client.get("/v1/evaluations", headers=acme)).json()["items"]) == 1


async def test_another_tenants_batch_is_not_found(
    client: httpx.AsyncClient,
    app: FastAPI,
    llm: respx.Route,
    acme: dict[str, str],
    globex: dict[str, str],
) -> None:
    created = await client.post(
        "/v1/evaluation-batches", json={"items": [interview(notify=None)]}, headers=acme
    )
    assert created.status_code == 202
    await settle(app)

    theirs = await client.get(created.headers["location"], headers=globex)
    mine = await client.get(created.headers["location"], headers=acme)

    assert theirs.status_code == 404
    assert mine.status_code == 200
    item = mine.json()["items"][0]
    assert (await client.get(item["href"], headers=globex)).status_code == 404
    assert (await client.get(item["href"], headers=acme)).json()["status"] == "completed"
    assert (await client.get("/v1/evaluations", headers=globex)).json()["items"] == []
    async with app.state.sessionmaker() as session:
        tenants = set(await session.scalars(select(Evaluation.tenant)))
    assert tenants == {"acme"}


async def test_the_same_idempotency_key_in_two_tenants_is_two_requests(
    client: httpx.AsyncClient, llm: respx.Route, acme: dict[str, str], globex: dict[str, str]
) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post("/v1/evaluations", json=interview(), headers=acme | headers)
    other = await client.post("/v1/evaluations", json=interview(), headers=globex | headers)
    replay = await client.post("/v1/evaluations", json=interview(), headers=acme | headers)

    assert (first.status_code, other.status_code) == (201, 201)
    assert "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]


async def test_a_scoring_result_is_not_shared_across_tenants(
    client: httpx.AsyncClient,
    app: FastAPI,
    llm: respx.Route,
    acme: dict[str, str],
    globex: dict[str, str],
) -> None:
    caching = app.state.settings.cache_ttl_s > 0
    first = await client.post("/v1/evaluations", json=interview(), headers=acme)
    theirs = await client.post("/v1/evaluations", json=interview(), headers=globex)
    repeat = await client.post("/v1/evaluations", json=interview(), headers=acme)

    assert [r.json()["cached"] for r in (first, theirs, repeat)] == [False, False, caching]
    assert llm.call_count == (2 if caching else 3)


def test_the_cli_makes_keys_of_a_tenant(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCORER_DATABASE_URL", database_url)

    assert main(["api-keys", "create", "acme-frontend", "--tenant", "acme"]) == 0
    assert "tenant: acme" in capsys.readouterr().out
    assert main(["api-keys", "create", "ours"]) == 0
    assert "tenant: default" in capsys.readouterr().out
    assert main(["api-keys", "create", "bad", "--tenant", "Not A Tenant"]) == 2
    assert "a tenant is" in capsys.readouterr().err
    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "tenant" in listing[0]
    assert [line.split()[3] for line in listing[1:]] == ["acme", "default"]
