"""The OpenAPI document: what FastAPI derives from the routes, completed for the frontend.

FastAPI knows the paths, parameters and bodies. What a generated client, a linter (Spectral's
recommended ruleset, `make lint`) and a fuzzer (schemathesis, tests/contract) also need is
added here, in one place:
- `servers`, `contact` and described `tags`;
- every error answer as a problem (`application/problem+json`): FastAPI declares the 422 it
  adds for path and query validation as `application/json`, which the service never sends;
- the headers the service sends on purpose, as `components.headers` that routers refer to by
  name (service.errors.header_refs; Spectral fails on a name not declared here), and
  `X-Request-ID` on every answer (the middleware sets it);
- `security` on every operation that can answer 401, and the 429 of the per-key limits
  (service/auth/limits.py), which any of them may answer;
- optional parameters as their type alone: a header or a query value is absent, never null;
- in the bodies only the service writes (success answers, webhook events), every property
  required: pydantic serializes each field, defaults included, so a client may rely on all of
  them (in request bodies a default still makes a field optional).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.auth.dependencies import SECURITY, SECURITY_SCHEMES
from service.errors import PROBLEM_JSON, Problem, header_refs, problem_responses

CONTACT = {"name": "Interview Scorer maintainers", "url": "https://interview-scorer.dev"}
# Relative: the document describes the service that serves it, wherever that is.
SERVERS = [{"url": "/", "description": "the service that serves this document"}]
TAGS = [
    {"name": "evaluations", "description": "Score interviews, read, list, review and erase them"},
    {"name": "batches", "description": "Many interviews at once, scored in the background"},
    {"name": "health", "description": "Liveness and readiness probes"},
]

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {
        "description": "The path of the resource created or accepted.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key and body: nothing was scored or stored again.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before asking again (RFC 9110).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Preference-Applied": {
        "description": "`respond-async`: the request was accepted to be scored in the "
        "background (RFC 7240).",
        "schema": {"type": "string", "enum": ["respond-async"]},
    },
    "X-Request-ID": {
        "description": "The request's id: the caller's X-Request-ID when short and plain, "
        "else a new one. Every log line of the request carries it.",
        "required": True,
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": "`Bearer`: how to authenticate.",
        "required": True,
        "schema": {"type": "string"},
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The application's OpenAPI document."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        tags=TAGS,
        servers=SERVERS,
        contact=CONTACT,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["headers"] = HEADERS
    components["securitySchemes"] = SECURITY_SCHEMES
    validation_problem = problem_responses(422)[422]
    too_many_requests = problem_responses(429)[429]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation["responses"]
            if "401" in responses:
                operation["security"] = SECURITY
                responses.setdefault("429", copy.deepcopy(too_many_requests))
            # FastAPI's own 422 (path and query validation) is rendered as a problem too.
            declared = responses.get("422")
            if declared is not None and PROBLEM_JSON not in declared.get("content", {}):
                responses["422"] = copy.deepcopy(validation_problem)
            for response in responses.values():
                response.setdefault("headers", {}).update(header_refs("X-Request-ID"))
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _never_null(parameter["schema"])
    for operations in schema.get("webhooks", {}).values():
        for operation in operations.values():
            # The receiver's answers: FastAPI's 422 would be the service's, not the receiver's.
            operation["responses"].pop("422", None)
    # Referenced by FastAPI's 422 only, which is replaced above.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for name in _written_only(schema):
        properties = schemas[name].get("properties", {})
        schemas[name]["required"] = list(properties)
    # FastAPI drops every null from the document, its examples' included.
    for component in schemas.values():
        for example in component.get("examples", []):
            _restore_nulls(example, component, schemas)
    return schema


def _restore_nulls(example: object, schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Put back in `example` the required properties whose only value was null."""
    if isinstance(example, list):
        for item in example:
            _restore_nulls(item, schema.get("items", {}), schemas)
        return
    if not isinstance(example, dict):
        return
    for option in [schema, *schema.get("anyOf", [])]:
        ref = option.get("$ref", "")
        target = schemas[ref.rsplit("/", 1)[-1]] if ref else option
        properties = target.get("properties", {})
        if not properties:
            continue
        for name in target.get("required", []):
            admits_null = {"type": "null"} in properties[name].get("anyOf", [])
            if name not in example and admits_null:
                example[name] = None
        for name, value in example.items():
            if name in properties:
                _restore_nulls(value, properties[name], schemas)


def _written_only(schema: dict[str, Any]) -> set[str]:
    """Component schemas that appear in the service's success answers or webhook bodies only:
    never in a request, a parameter or a problem."""
    written: list[Any] = []
    other: list[Any] = []
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            other.extend([operation.get("parameters", []), operation.get("requestBody", {})])
            for status, response in operation["responses"].items():
                (written if status.startswith("2") else other).append(response)
    for operations in schema.get("webhooks", {}).values():
        for operation in operations.values():
            written.append(operation.get("requestBody", {}))
    schemas = schema["components"]["schemas"]
    return _reachable(written, schemas) - _reachable(other, schemas)


def _reachable(roots: list[Any], schemas: dict[str, Any]) -> set[str]:
    """The component schemas that `roots` refer to, directly or through others."""
    prefix = "#/components/schemas/"
    found: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] not in found:
                found.add(ref[len(prefix) :])
                stack.append(schemas[ref[len(prefix) :]])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its null branch (FastAPI's `X | None`)."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}
