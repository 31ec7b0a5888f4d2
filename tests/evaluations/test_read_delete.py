"""Reading, listing (cursor pagination and filters) and erasing evaluations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import update

from service.database import utcnow
from service.evaluations.models import Evaluation
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
)
from tests.evaluations.test_create import stored_count


@pytest.fixture(autouse=True)
def upstreams_ok(upstream: respx.MockRouter) -> None:
    upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())


async def score(client: httpx.AsyncClient, auth: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await client.post("/v1/evaluations", json=interview(**changes), headers=auth)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_unknown_evaluation_is_404_problem(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.get("/v1/evaluations/does-not-exist", headers=auth)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "No evaluation does-not-exist."


async def test_list_pages_through_everything_newest_first(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = [(await score(client, auth))["id"] for _ in range(5)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/evaluations", params=params, headers=auth)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(created))


async def pages(
    client: httpx.AsyncClient, auth: dict[str, str], *, cursor: str | None = None
) -> list[list[str]]:
    """The ids of every page from `cursor` on, two to a page."""
    found: list[list[str]] = []
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/evaluations", params=params, headers=auth)).json()
        found.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def set_created_at(app: FastAPI, ids: list[str], moment: datetime) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Evaluation).where(Evaluation.id.in_(ids)).values(created_at=moment)
        )


async def test_pages_are_stable_when_evaluations_share_a_creation_time(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    created = [(await score(client, auth))["id"] for _ in range(5)]
    await set_created_at(app, created, utcnow())

    seen = await pages(client, auth)

    # Equal times are ordered by id, so no evaluation is skipped or shown twice.
    assert [len(page) for page in seen] == [2, 2, 1]
    assert [id_ for page in seen for id_ in page] == sorted(created, reverse=True)


async def test_pages_are_stable_when_evaluations_arrive_between_them(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    created = [(await score(client, auth))["id"] for _ in range(5)]
    newest_first = list(reversed(created))
    first = (await client.get("/v1/evaluations", params={"limit": 2}, headers=auth)).json()
    assert [item["id"] for item in first["items"]] == newest_first[:2]

    # One arrives after the first page; another arrives stamped older than all (a replica's
    # clock behind): the first sorts before the cursor, the second after it.
    newer = (await score(client, auth))["id"]
    backdated = (await score(client, auth))["id"]
    await set_created_at(app, [backdated], utcnow() - timedelta(days=1))
    rest = [id_ for page in await pages(client, auth, cursor=first["next_cursor"]) for id_ in page]

    assert rest == [*newest_first[2:], backdated]
    assert newer not in rest


async def test_list_filters(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    jane = await score(client, auth)
    bob = await score(
        client,
        auth,
        candidate={"name": "Bob", "email": "Bob@Example.com"},
        position={"title": "Data Engineer"},
    )

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/evaluations", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids(candidate_email="bob@example.com") == [bob["id"]]
    assert await ids(position="Backend Engineer") == [jane["id"]]
    assert await ids(status="completed") == [bob["id"], jane["id"]]
    assert await ids(status="failed") == []


@pytest.mark.parametrize(
    "params",
    [{"cursor": "garbage!"}, {"limit": 0}, {"limit": 101}, {"status": "weird"}],
    ids=["bad-cursor", "limit-0", "limit-101", "bad-status"],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, Any]
) -> None:
    response = await client.get("/v1/evaluations", params=params, headers=auth)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_delete_erases_the_evaluation(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    kept = await score(client, auth)
    erased = await score(client, auth)

    response = await client.delete(f"/v1/evaluations/{erased['id']}", headers=auth)

    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/v1/evaluations/{erased['id']}", headers=auth)).status_code == 404
    listed = (await client.get("/v1/evaluations", headers=auth)).json()["items"]
    assert [item["id"] for item in listed] == [kept["id"]]
    assert await stored_count(app) == 1
    again = await client.delete(f"/v1/evaluations/{erased['id']}", headers=auth)
    assert again.status_code == 404


async def test_a_read_lists_the_mails_in_the_order_of_the_first_answer(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # Found by the chaos run: the mails of one evaluation were created in the same instant and
    # read back in the order of their random ids, so a read and its 201 disagreed.
    recruiters = [f"r{i}@example.com" for i in range(6)]
    created = await score(client, auth, notify={"candidate": True, "recruiters": recruiters})

    read = (await client.get(f"/v1/evaluations/{created['id']}", headers=auth)).json()
    listed = (await client.get("/v1/evaluations", headers=auth)).json()["items"][0]

    def order(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(n["to"], n["kind"]) for n in body["notifications"]]

    assert order(created) == [("jane@example.com", "candidate_follow_up")] + [
        (r, "recruiter_summary") for r in recruiters
    ]
    assert order(read) == order(created)
    assert order(listed) == order(created)
