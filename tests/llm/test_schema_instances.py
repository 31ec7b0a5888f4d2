"""Every reply that conforms to the JSON schema the service sends is accepted, at the first try.

A server under constrained decoding answers with any instance of the schema it is given; the
instances here are drawn by hypothesis-jsonschema from the schema the service really sent, for
several rubrics, and go through the real client, scorer and database. Nothing they contain may
cost a repair round trip, and no instance may be refused.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from service.evaluations.schemas import MAX_CRITERIA
from tests.conftest import interview
from tests.llm.helpers import CHAT, chat

RUBRICS = {
    "one": ["communication"],
    "two": ["technical_depth", "communication"],
    # Names of pydantic model attributes: the validation must not trip on them.
    "attribute-names": ["json", "model_config", "schema", "validate"],
}
# The widest rubric, with the longest keys: fewer examples, each draws twenty criteria (drawing
# costs about 20 ms per criterion, which bounds the example counts: the file runs in seconds).
WIDEST = [f"c{i}_{'x' * 60}" for i in range(MAX_CRITERIA)]
EXAMPLES, WIDEST_EXAMPLES = 20, 5


def rubric(keys: list[str]) -> dict[str, Any]:
    return {"criteria": [{"key": key, "description": f"About {key}"} for key in keys]}


# The schema each rubric's requests send, read off the first request (per rubric and run).
_SENT: dict[tuple[str, ...], st.SearchStrategy[Any]] = {}


async def sent_schema(
    client: httpx.AsyncClient, auth: dict[str, str], route: respx.Route, body: Any
) -> st.SearchStrategy[Any]:
    keys = tuple(c["key"] for c in body["rubric"]["criteria"])
    if keys not in _SENT:
        route.mock(return_value=chat({}))
        await client.post("/v1/evaluations", json=body, headers=auth)
        sent = json.loads(route.calls.last.request.content)["response_format"]["json_schema"]
        _SENT[keys] = from_schema(sent["schema"])
    return _SENT[keys]


def _examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        # The app and its database are made once per test, not per example: that is the point.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.mark.parametrize("settings_overrides", [{"cache_ttl_s": 0}])
@pytest.mark.parametrize("keys", list(RUBRICS.values()), ids=list(RUBRICS))
@_examples(EXAMPLES)
@given(data=st.data())
async def test_every_instance_of_the_sent_schema_is_accepted(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    keys: list[str],
    data: st.DataObject,
) -> None:
    await accepted_at_once(client, auth, upstream, keys, data)


@pytest.mark.parametrize("settings_overrides", [{"cache_ttl_s": 0}])
@_examples(WIDEST_EXAMPLES)
@given(data=st.data())
async def test_every_instance_for_the_widest_rubric_is_accepted(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, data: st.DataObject
) -> None:
    await accepted_at_once(client, auth, upstream, WIDEST, data)


async def accepted_at_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    upstream: respx.MockRouter,
    keys: list[str],
    data: st.DataObject,
) -> None:
    """One drawn instance, answered to a scoring of `keys`, is accepted without a repair."""
    # No portfolio and no mail: each example costs one LLM call and one row.
    body = interview(rubric=rubric(keys), portfolio=None, notify=None)
    route = upstream.post(CHAT)
    instance = data.draw(await sent_schema(client, auth, route, body), label="reply")
    route.reset()
    route.mock(return_value=chat(instance))

    response = await client.post("/v1/evaluations", json=body, headers=auth)

    assert response.status_code == 201, response.text
    assert route.call_count == 1  # no repair needed
    criteria = response.json()["criteria"]
    assert [c["key"] for c in criteria] == keys
    for criterion in criteria:
        said = instance["criteria"][criterion["key"]]
        assert criterion["insufficient_evidence"] is (criterion["score"] is None)
        if said["insufficient_evidence"]:
            assert criterion["score"] is None
        else:
            assert criterion["score"] == said["score"]
