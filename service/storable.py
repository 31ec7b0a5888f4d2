"""Text the database can store: PostgreSQL's text cannot hold a NUL character, and a request
carrying one answered 500 there. Every string the API takes refuses it (422 naming the field),
and the OpenAPI document says so with a pattern."""

from __future__ import annotations

from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

STORABLE_TEXT = r"^[^\x00]*$"


def _refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a NUL character cannot be stored")
    return value


class _NoNul:
    """Annotated[str, NO_NUL]: a substring search (a regex pattern scans ten times slower);
    the JSON Schema states the same rule as STORABLE_TEXT."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_refuse_nul, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = STORABLE_TEXT
        return json_schema


NO_NUL = _NoNul()
