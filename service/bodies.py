"""Request bodies read as I-JSON (RFC 7493), so that every hostile body is a clear 4xx.

Python's json module, which FastAPI reads bodies with, lets through what JSON does not settle:
an object naming a member twice (the last wins: a proxy that reads the first and this service
would act on two different requests), an integer too long to convert (a bare 400), and any
encoding it can detect. Here a body must be UTF-8 and name each member once, or it is refused
with a 422 problem naming where (`MalformedBody`); a syntax error is one too. Numbers beyond a
double's range (1e400, an integer of thousands of digits) are read as infinities, which every
numeric field refuses with a 422 naming the field (`allow_inf_nan=False` in the schemas), as
it refuses NaN and Infinity.

The routers use `StrictJSONRoute`; the hot path's only extra cost is the duplicate check, a
dict built from each object's pairs (a few microseconds per request).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.errors import MalformedBody


class _Duplicate(Exception):
    """An object names a member twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _Duplicate
    return members


def _integer(digits: str) -> int | float:
    # Past Python's limit on digits (4300) an integer is out of any range the service takes.
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf


# Made once: json.loads with arguments would make a decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_int=_integer)


class _Members(dict[str, Any]):
    """An object of a body that names a member twice, and which."""

    duplicate: str | None = None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members(pairs)
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            members.duplicate = name
            break
        seen.add(name)
    return members


def _duplicate_path(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """Where the first member named twice is, as validation errors name fields."""
    if isinstance(value, _Members):
        if value.duplicate is not None:
            return ".".join((*path, value.duplicate))
        children: Any = value.items()
    elif isinstance(value, list):
        children = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for name, child in children:
        found = _duplicate_path(child, (*path, name))
        if found is not None:
            return found
    return None


def loads(body: bytes) -> Any:
    """The body's value; MalformedBody (422) when it is not I-JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"The body is not UTF-8 (byte {exc.start}).", field="body", rule="utf8"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"The body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            field="body",
            rule="json_invalid",
        ) from None
    except _Duplicate:
        value = json.loads(text, object_pairs_hook=_members, parse_int=_integer)
        field = _duplicate_path(value) or "body"
        raise MalformedBody(
            f"The body names {field} more than once.", field=field, rule="duplicate_member"
        ) from None
    except RecursionError:
        raise MalformedBody(
            "The body is nested too deeply.", field="body", rule="too_deep"
        ) from None


class StrictJSONRequest(Request):
    """A request whose JSON body is read by `loads`."""

    async def json(self) -> Any:
        """The body's value, read once."""
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose body is read as I-JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a StrictJSONRequest."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
