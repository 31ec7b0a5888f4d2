"""The committed openapi.json is the code's schema, so the frontend's generated client
never breaks silently."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.main import openapi_document

COMMITTED = Path(__file__).resolve().parent.parent / "openapi.json"


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
