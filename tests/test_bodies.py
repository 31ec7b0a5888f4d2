"""Hostile bodies: whatever a client sends, the answer is a 4xx problem and nothing is stored.

Bodies are read as I-JSON (service/bodies.py): not UTF-8, not JSON, a member named twice or
nested past the parser's depth is a 422 naming where; an out-of-range number is a 422 naming the
field; an oversized body a 413. A seeded fuzz run sends such bodies to every endpoint that takes
one."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select

from service.bodies import loads
from service.errors import MalformedBody
from service.evaluations.models import Evaluation
from service.reviews.models import EvaluationReview
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
)

JSON = {"Content-Type": "application/json"}
HUGE_INTEGER = "9" * 5000
OUT_OF_RANGE = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", HUGE_INTEGER, "-" + HUGE_INTEGER]


def _id(number: str) -> str:
    return number if len(number) < 20 else f"{number[0]}-{len(number)}-digits"


def raw(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def count(app: FastAPI, table: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
def llm(upstream: respx.MockRouter) -> respx.Route:
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis())
    return upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )


def test_loads_reads_what_json_allows_and_refuses_what_i_json_does_not() -> None:
    assert loads(b'{"a": [1, 2.5, "\\u00e9"], "b": {"c": null}}') == {
        "a": [1, 2.5, "é"],
        "b": {"c": None},
    }
    assert loads(("9" * 5000).encode()) == float("inf")
    cases = {
        b'{"a": 1, "a": 2}': ("a", "duplicate_member"),
        b'{"x": [{"k": 1}, {"k": 1, "k": 2}]}': ("x.1.k", "duplicate_member"),
        b'{"a": "\xff"}': ("body", "utf8"),
        b"[" * 100_000: ("body", "too_deep"),
        b'{"a": ': ("body", "json_invalid"),
        "\ufeff{}".encode("utf-16"): ("body", "utf8"),
    }
    for body, (field, rule) in cases.items():
        with pytest.raises(MalformedBody) as refused:
            loads(body)
        assert (refused.value.field, refused.value.rule) == (field, rule), body[:30]


@pytest.mark.parametrize("number", [*OUT_OF_RANGE, "1e-400", "0", "-1", "100.5"], ids=_id)
async def test_an_out_of_range_weight_is_a_422_naming_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    app: FastAPI,
    number: str,
) -> None:
    body = raw(interview()).replace('"weight": 2', f'"weight": {number}', 1)

    response = await client.post("/v1/evaluations", content=body, headers=auth | JSON)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["rubric.criteria.0.weight"]
    assert not upstream.calls
    assert await count(app, Evaluation) == 0


@pytest.mark.parametrize("number", [*OUT_OF_RANGE, "6", "0", "2.5"], ids=_id)
async def test_an_out_of_range_review_score_is_a_422_naming_it(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI, number: str
) -> None:
    created = await client.post("/v1/evaluations", json=interview(), headers=auth)
    body = f'{{"criterion_scores": {{"technical_depth": {number}}}, "reason": "r"}}'

    response = await client.post(
        f"{created.headers['location']}/reviews", content=body, headers=auth | JSON
    )

    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["criterion_scores.technical_depth"]
    assert await count(app, EvaluationReview) == 0


@pytest.mark.parametrize("value", ["1e400", "NaN", HUGE_INTEGER, "0", "101"], ids=_id)
async def test_an_out_of_range_page_size_is_a_422_naming_it(
    client: httpx.AsyncClient, auth: dict[str, str], value: str
) -> None:
    response = await client.get("/v1/evaluations", params={"limit": value}, headers=auth)

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["query.limit"]


async def test_an_out_of_range_number_in_a_batch_item_refuses_that_item_naming_it(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route
) -> None:
    items = raw({"items": [interview(), interview()]}).replace('"weight": 2', '"weight": 1e400', 1)

    response = await client.post("/v1/evaluation-batches", content=items, headers=auth | JSON)

    assert response.status_code == 202
    bad, good = response.json()["items"]
    assert bad["status"] == "invalid"
    assert bad["error"]["status"] == 422
    assert [e["field"] for e in bad["error"]["errors"]] == ["rubric.criteria.0.weight"]
    assert good["status"] == "pending"


async def test_a_member_named_twice_is_a_422_naming_where(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> None:
    body = raw(interview()).replace('"key": "technical_depth"', '"key": "a", "key": "b"', 1)

    response = await client.post("/v1/evaluations", content=body, headers=auth | JSON)

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/malformed-body")
    assert problem["errors"] == [
        {
            "field": "rubric.criteria.0.key",
            "message": "The body names rubric.criteria.0.key more than once.",
            "type": "duplicate_member",
        }
    ]
    assert not upstream.calls
    assert await count(app, Evaluation) == 0


# --- The fuzz run: seeded mutations of valid bodies, each malformed by construction. ---


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


class Deep:
    """A placeholder serialized as an array nested far past the parser's depth."""

    TEXT = "[" * 50_000 + "]" * 50_000


class Number:
    """A placeholder serialized as a number literal out of any field's range."""

    def __init__(self, text: str) -> None:
        self.text = text


def _serialize(value: Any) -> str:
    if isinstance(value, Number):
        return value.text
    if value is Deep:
        return Deep.TEXT
    if isinstance(value, dict):
        return "{" + ",".join(f"{raw(k)}:{_serialize(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_serialize(v) for v in value) + "]"
    return raw(value)


def _duplicate_a_member(rng: random.Random, body: Any) -> bytes:
    objects = [p for p in _paths(body) if isinstance(_get(body, p), dict) and _get(body, p)]
    path = rng.choice(objects)
    target = _get(body, path)
    name = rng.choice(list(target))
    text = _serialize(_set(body, path, {**target, "\x00marker": None}))
    twice = f"{raw(name)}:{_serialize(target[name])}"
    return text.replace(f"{raw(chr(0) + 'marker')}:null", twice).encode()


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


Mutation = Callable[[random.Random, Any], bytes]


def _truncated(rng: random.Random, body: Any) -> bytes:
    text = raw(body).encode()
    return text[: rng.randrange(len(text) - 1)]


def _invalid_utf8(rng: random.Random, body: Any) -> bytes:
    text = raw(body).encode()
    at = rng.randrange(len(text))
    return text[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]) + text[at:]


def _deeply_nested(rng: random.Random, body: Any) -> bytes:
    path = rng.choice(_paths(body)[1:])
    return _serialize(_set(body, path, Deep)).encode()


def _huge_number(rng: random.Random, body: Any) -> bytes:
    numbers = [p for p in _paths(body) if isinstance(_get(body, p), int | float)]
    path = rng.choice(numbers)
    return _serialize(_set(body, path, Number(rng.choice(OUT_OF_RANGE)))).encode()


def _oversized_string(rng: random.Random, body: Any) -> bytes:
    strings = [p for p in _paths(body) if isinstance(_get(body, p), str)]
    path = rng.choice(strings)
    return raw(_set(body, path, "x" * rng.choice([100_001, 2_000_000]))).encode()


MUTATIONS: list[Mutation] = [
    _truncated,
    _invalid_utf8,
    _duplicate_a_member,
    _deeply_nested,
    _huge_number,
    _oversized_string,
]


@pytest.mark.parametrize("settings_overrides", [{"max_batch_body_bytes": 1_000_000}])
async def test_fuzzed_bodies_get_only_4xx_and_store_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], llm: respx.Route, app: FastAPI
) -> None:
    created = await client.post("/v1/evaluations", json=interview(notify=None), headers=auth)
    review = {"criterion_scores": {"technical_depth": 3}, "reason": "r", "decision": "hire"}
    targets: list[tuple[str, Any]] = [
        ("/v1/evaluations", interview()),
        (f"{created.headers['location']}/reviews", review),
        # One item: a bad number or string in it leaves nothing to queue.
        ("/v1/evaluation-batches", {"items": [interview()]}),
    ]
    calls = llm.call_count
    rng = random.Random(16)
    answers: list[tuple[str, str, int, Any]] = []

    for path, valid in targets:
        for mutation in MUTATIONS:
            for _ in range(8):
                body = mutation(rng, valid)
                response = await client.post(path, content=body, headers=auth | JSON)
                problem = response.json()
                answers.append((path, mutation.__name__, response.status_code, problem))

    for path, name, status, problem in answers:
        if path.endswith("batches") and status == 202:
            # An item's own fault is reported against it; nothing of it is queued.
            assert name in ("_huge_number", "_oversized_string"), (path, name)
            invalid = [i for i in problem["items"] if i["status"] == "invalid"]
            assert len(invalid) == 1, problem
            assert invalid[0]["error"]["errors"][0]["field"], problem
            continue
        assert 400 <= status < 500, (path, name, status, problem)
        assert status in (413, 422), (path, name, status)
        assert problem["errors"][0]["field"], (path, name, problem)
    assert llm.call_count == calls
    assert await count(app, EvaluationReview) == 0
    assert await count(app, Evaluation) == 1  # the one made above
