"""The committed openapi.json is the code's schema, so the frontend's generated client
never breaks silently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from service.main import openapi_document
from tests.contract.documented import COMMITTED, document, violations


def test_committed_openapi_matches_the_code() -> None:
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert openapi_document() == committed, (
        "openapi.json differs from the code's schema: if the API change is intended, "
        "regenerate it with `.venv/bin/interview-scorer openapi` (or `make openapi`) "
        "and commit it, and tell the frontend to regenerate its client"
    )


async def test_the_service_serves_the_same_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(COMMITTED.read_text(encoding="utf-8"))


def _examples(node: object, where: str = "") -> Iterator[tuple[str, dict[str, Any], object]]:
    """Every example in the document, with the schema it illustrates."""
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list):  # a JSON Schema's examples
            schema = {k: v for k, v in node.items() if k != "examples"}
            for i, example in enumerate(node["examples"]):
                yield f"{where}/examples/{i}", schema, example
        if "schema" in node and isinstance(node.get("examples"), dict):  # a media type's
            for name, example in node["examples"].items():
                yield f"{where}/examples/{name}", node["schema"], example["value"]
        if "schema" in node and "example" in node:
            yield f"{where}/example", node["schema"], node["example"]
        for key, value in node.items():
            yield from _examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _examples(value, f"{where}/{i}")


def test_every_example_in_the_document_is_valid() -> None:
    examples = list(_examples(document()))

    assert {where for where, _, _ in examples} >= {
        "/components/schemas/EvaluationCreate/examples/0",
        "/components/schemas/EvaluationRead/examples/0",
        "/components/schemas/ReviewCreate/examples/0",
        "/components/schemas/Problem/examples/0",
    }
    for where, schema, example in examples:
        assert violations(example, schema) == [], where
