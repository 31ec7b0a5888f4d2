"""What the committed OpenAPI document says a body must be, checked with jsonschema."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


@cache
def document() -> dict[str, Any]:
    """The committed openapi.json."""
    loaded: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return loaded


def violations(instance: object, schema: dict[str, Any]) -> list[str]:
    """Where `instance` breaks `schema` (a schema of the document, its $refs resolved there)."""
    rooted = {**schema, "components": document()["components"]}
    validator = Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def webhook_body(event: str) -> dict[str, Any]:
    """The schema the document declares for the body of the webhook `event`."""
    operation = document()["webhooks"][event]["post"]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema
