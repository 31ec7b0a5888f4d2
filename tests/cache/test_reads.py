"""Cached GET endpoints: keyed by scope, and never serving an erased evaluation."""

from __future__ import annotations

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import update

from service.config import Settings
from service.evaluations.models import Evaluation
from service.main import create_app
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    KeyMaker,
    analysis,
    completion,
    interview,
    serving,
    settle,
)
from tests.conftest import scores_content as content

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"


@pytest.fixture
def llm(upstream: respx.MockRouter) -> respx.Route:
    upstream.post(ANALYZE).mock(return_value=analysis())
    return upstream.post(CHAT).mock(
        return_value=completion(content({"technical_depth": 4, "communication": 3}))
    )


async def rewrite_summary(app: FastAPI, evaluation_id: str, summary: str) -> None:
    """Change the stored row behind the API's back: only a cache still shows the old one."""
    async with app.state.sessionmaker() as session, session.begin():
        row = await session.get(Evaluation, evaluation_id)
        assert row is not None
        assert row.result is not None
        await session.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id)
            .values(result={**row.result, "summary": summary})
        )


async def test_an_evaluation_is_read_from_the_cache(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    # No follow-up emails: their delivery would change the evaluation after the POST.
    body = interview(notify=None)
    created = (await client.post("/v1/evaluations", json=body, headers=auth)).json()
    url = f"/v1/evaluations/{created['id']}"

    first = await client.get(url, headers=auth)
    await rewrite_summary(app, created["id"], "changed underneath")
    second = await client.get(url, headers=auth)

    assert first.status_code == second.status_code == 200
    assert first.json() == created
    assert second.json() == created
    assert first.headers["x-fastapi-cache"] == "MISS"
    assert second.headers["x-fastapi-cache"] == "HIT"
    # HTTP caches must ask again: an erased evaluation may not be shown from them either.
    assert second.headers["cache-control"] == "private, no-cache"


async def test_keys_with_other_scopes_do_not_share_entries(
    client: httpx.AsyncClient, make_key: KeyMaker, llm: respx.Route, app: FastAPI
) -> None:
    full = await make_key("write", "read", "delete")
    reader = await make_key("read")
    created = (await client.post("/v1/evaluations", json=interview(), headers=full)).json()
    url = f"/v1/evaluations/{created['id']}"
    # Only a final view is cached: one whose mails the worker has sent.
    await settle(app)

    assert (await client.get(url, headers=full)).headers["x-fastapi-cache"] == "MISS"
    assert (await client.get(url, headers=reader)).headers["x-fastapi-cache"] == "MISS"
    assert (await client.get(url, headers=reader)).headers["x-fastapi-cache"] == "HIT"
    # The same scopes on another key share the entry: the response does not depend on it.
    other_reader = await make_key("read")
    assert (await client.get(url, headers=other_reader)).headers["x-fastapi-cache"] == "HIT"


async def test_a_new_evaluation_appears_in_a_cached_list(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    first = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()
    await settle(app)
    listed = await client.get("/v1/evaluations", headers=auth)
    assert [e["id"] for e in listed.json()["items"]] == [first["id"]]
    assert (await client.get("/v1/evaluations", headers=auth)).headers["x-fastapi-cache"] == "HIT"

    second = await client.post("/v1/evaluations", json=interview(language="ko"), headers=auth)

    relisted = await client.get("/v1/evaluations", headers=auth)
    assert [e["id"] for e in relisted.json()["items"]] == [second.json()["id"], first["id"]]


async def test_a_review_is_shown_by_cached_reads_at_once(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route
) -> None:
    created = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()
    url = f"/v1/evaluations/{created['id']}"
    await client.get(url, headers=auth)
    await client.get("/v1/evaluations", headers=auth)
    assert (await client.get(url, headers=auth)).json()["review"] is None

    reviewed = await client.post(
        f"{url}/reviews", json={"decision": "no_hire", "reason": "second opinion"}, headers=auth
    )

    assert reviewed.status_code == 201
    assert (await client.get(url, headers=auth)).json()["review"]["reason"] == "second opinion"
    listed = (await client.get("/v1/evaluations", headers=auth)).json()["items"]
    assert listed[0]["review"]["reason"] == "second opinion"


async def test_a_deleted_evaluation_is_gone_from_every_cache(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    created = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()
    url = f"/v1/evaluations/{created['id']}"
    await settle(app)
    await client.get(url, headers=auth)
    assert (await client.get(url, headers=auth)).headers["x-fastapi-cache"] == "HIT"
    await client.get("/v1/evaluations", headers=auth)

    deleted = await client.delete(url, headers=auth)

    assert deleted.status_code == 204
    assert (await client.get(url, headers=auth)).status_code == 404
    assert (await client.get(url, headers=auth)).status_code == 404
    assert (await client.get("/v1/evaluations", headers=auth)).json()["items"] == []
    # The scoring result derived from the erased interview is gone too: scoring it again
    # asks the LLM again.
    again = await client.post("/v1/evaluations", json=interview(), headers=auth)
    assert again.json()["cached"] is False
    assert llm.call_count == 2


@pytest.mark.parametrize("backend_kind", ["redis"], indirect=True)
async def test_a_delete_on_one_replica_reaches_the_cache_of_another(
    settings: Settings, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    replica = create_app(settings)
    async with (
        serving(replica, worker=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as one,
        httpx.AsyncClient(transport=httpx.ASGITransport(replica), base_url="http://b") as two,
    ):
        created = (await one.post("/v1/evaluations", json=interview(), headers=auth)).json()
        url = f"/v1/evaluations/{created['id']}"
        await settle(app)
        await one.get(url, headers=auth)
        assert (await one.get(url, headers=auth)).headers["x-fastapi-cache"] == "HIT"

        assert (await two.delete(url, headers=auth)).status_code == 204

        assert (await one.get(url, headers=auth)).status_code == 404


@pytest.mark.parametrize("backend_kind", ["memory"], indirect=True)
async def test_several_workers_without_redis_do_not_cache_reads(
    settings: Settings, auth: dict[str, str], llm: respx.Route
) -> None:
    workers = create_app(settings.model_copy(update={"workers": 2}))
    async with (
        serving(workers),
        httpx.AsyncClient(transport=httpx.ASGITransport(workers), base_url="http://w") as client,
    ):
        created = (await client.post("/v1/evaluations", json=interview(), headers=auth)).json()
        reads = [await client.get(f"/v1/evaluations/{created['id']}", headers=auth) for _ in "ab"]

    assert [r.status_code for r in reads] == [200, 200]
    assert all("x-fastapi-cache" not in r.headers for r in reads)
