"""The /v1/evaluations endpoints: parse HTTP, call the use case, send its bytes."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import StringConstraints, TypeAdapter, ValidationError

from service.auth.dependencies import DeleteKey, ReadKey, WriteKey, authenticate
from service.bodies import StrictJSONRoute, loads
from service.context import ContextDep
from service.errors import header_refs, problem_responses
from service.evaluations import service as evaluation_service
from service.evaluations.schemas import EvaluationCreate, EvaluationPage, EvaluationRead, Status
from service.storable import STORABLE_TEXT

router = APIRouter(
    prefix=evaluation_service.EVALUATIONS_PATH, tags=["evaluations"], route_class=StrictJSONRoute
)

EvaluationId = Annotated[
    str, Path(max_length=64, pattern=STORABLE_TEXT, description="the evaluation's id")
]
JSON = "application/json"
EVALUATION_SCHEMA = {"$ref": "#/components/schemas/EvaluationRead"}


def evaluation_links(evaluation_id: str) -> dict[str, dict[str, object]]:
    """OpenAPI links from an answer that names an evaluation to what can be done with it."""
    parameters = {"evaluation_id": evaluation_id}
    return {
        "GetEvaluation": {"operationId": "getEvaluation", "parameters": parameters},
        "CreateReview": {"operationId": "createReview", "parameters": parameters},
        "DeleteEvaluation": {"operationId": "deleteEvaluation", "parameters": parameters},
    }


def _read_response(read: evaluation_service.Read) -> Response:
    # A cached read must not be kept by a browser or proxy: an erased evaluation would stay
    # visible. X-FastAPI-Cache says whether this process's cache answered (HIT or MISS).
    headers = {"Cache-Control": "private, no-cache"}
    if read.hit is not None:
        headers["X-FastAPI-Cache"] = "HIT" if read.hit else "MISS"
    if read.retry_after_s is not None:
        headers["Retry-After"] = str(read.retry_after_s)
    return Response(read.body, headers=headers, media_type=JSON)


IDEMPOTENCY_KEY_RULES = {"min_length": 1, "max_length": 255, "pattern": r"^[\x20-\x7e]+$"}
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        **IDEMPOTENCY_KEY_RULES,
        description=(
            "Makes retries safe: the same key and body return the first response "
            "(`Idempotent-Replayed: true`), another body 422, while the first runs 409. "
            "Scoped to the API key; remembered for SCORER_IDEMPOTENCY_TTL_S."
        ),
    ),
]


def prefers_async(prefer: str | None) -> bool:
    """Whether a Prefer header (RFC 7240) asks for respond-async."""
    if not prefer:
        return False
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in prefer.split(","))


PREFER_RULES = {"max_length": 200}
# The headers the endpoint declares, with the rules of their declarations.
_HEADERS = {
    "Idempotency-Key": TypeAdapter(Annotated[str, StringConstraints(**IDEMPOTENCY_KEY_RULES)]),
    "Prefer": TypeAdapter(Annotated[str, StringConstraints(**PREFER_RULES)]),
}


def _is_json(content_type: str | None) -> bool:
    # As FastAPI decides it: no content type, application/json, or application/*+json.
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def _invalid(errors: list[Any], loc: tuple[str, ...]) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": (*loc, *e["loc"])} for e in errors])


def _body_error(kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message, "input": None}])


async def _create_arguments(request: Request) -> dict[str, Any]:
    """The arguments of `create_evaluation`, resolved as FastAPI would from its signature: the
    key (401/403/429), the headers and the body (422 naming the field)."""
    api_key = await authenticate(request, "write")
    headers = request.headers
    values: dict[str, str | None] = {}
    for name, adapter in _HEADERS.items():
        value = values[name] = headers.get(name)
        if value is not None:
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                raise _invalid(exc.errors(include_input=False), ("header", name)) from None
    body = await request.body()
    if not body:
        raise _body_error("missing", "Field required")
    if not _is_json(headers.get("content-type")):
        raise _body_error(
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        )
    try:
        # Read as I-JSON (service/bodies.py: MalformedBody, 422), then validated.
        payload = EvaluationCreate.model_validate(loads(body))
    except ValidationError as exc:
        raise _invalid(exc.errors(include_input=False), ("body",)) from None
    return {
        "payload": payload,
        "api_key": api_key,
        "ctx": request.app.state.context,
        "idempotency_key": values["Idempotency-Key"],
        "prefer": values["Prefer"],
    }


class ArgumentsResolvedHere(APIRoute):
    """The route of POST /v1/evaluations, which resolves its endpoint's arguments itself.

    FastAPI's generic resolution (a solver pass per dependency and per kind of parameter, the
    content type parsed with the standard library's email package, the body decoded and then
    validated) cost a fifth of a cached request's CPU (bench/, `make bench`). The OpenAPI
    document is still generated from the endpoint's signature, and the endpoint still runs.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Call the endpoint with arguments from `_create_arguments`."""
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(**await _create_arguments(request))
            return response

        return handle


async def create_evaluation(
    payload: EvaluationCreate,
    api_key: WriteKey,
    ctx: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
    prefer: Annotated[
        str | None,
        Header(alias="Prefer", **PREFER_RULES, description="`respond-async`: answer 202 at once"),
    ] = None,
) -> Response:
    """Score an interview with the LLM and the portfolio analyzer, concurrently, and store it.

    With `Prefer: respond-async`: 202 at once with the pending evaluation and its Location;
    it is scored in the background (poll the Location, or give a `callback_url`).
    """
    answer = await evaluation_service.create_evaluation(
        ctx,
        payload=payload,
        api_key=api_key,
        idempotency_key=idempotency_key,
        respond_async=prefers_async(prefer),
    )
    return Response(answer.body, status_code=answer.status, headers=answer.headers, media_type=JSON)


_CONFLICT = problem_responses(409)[409]

router.add_api_route(
    "",
    create_evaluation,
    methods=["POST"],
    route_class_override=ArgumentsResolvedHere,
    operation_id="createEvaluation",
    status_code=status.HTTP_201_CREATED,
    response_model=EvaluationRead,
    responses={
        201: {
            "description": "Scored and stored (or, with `Idempotent-Replayed`, stored before)",
            "headers": header_refs("Location", "Idempotent-Replayed"),
            "links": evaluation_links("$response.body#/id"),
        },
        202: {
            "description": "Accepted (`Prefer: respond-async`): the pending evaluation; poll "
            "its Location after Retry-After seconds",
            "content": {JSON: {"schema": EVALUATION_SCHEMA}},
            "headers": header_refs(
                "Location", "Preference-Applied", "Retry-After", "Idempotent-Replayed"
            ),
            "links": evaluation_links("$response.body#/id"),
        },
        **problem_responses(401, 403, 409, 413, 422, 502, 503, 504),
        # While the first request with this Idempotency-Key is still running.
        409: {**_CONFLICT, "headers": header_refs("Retry-After")},
    },
    summary="Score an interview",
)


@router.get(
    "/{evaluation_id}",
    operation_id="getEvaluation",
    response_model=EvaluationRead,
    responses={
        200: {
            "description": "The evaluation; while it is pending, Retry-After says when to ask "
            "again",
            "headers": header_refs("Retry-After"),
        },
        **problem_responses(401, 403, 404),
    },
    summary="One evaluation",
)
async def read_evaluation(
    evaluation_id: EvaluationId,
    api_key: ReadKey,
    ctx: ContextDep,
    include: Annotated[
        Literal["provenance"] | None,
        Query(
            description="`provenance`: add the prompt version, rubric hash, model, seed, "
            "system fingerprints, and the raw output and tokens of every LLM attempt"
        ),
    ] = None,
) -> Response:
    """One evaluation; also the way to poll an asynchronous one."""
    read = await evaluation_service.read_evaluation(
        ctx,
        evaluation_id=evaluation_id,
        include_provenance=include == "provenance",
        api_key=api_key,
    )
    return _read_response(read)


@router.get(
    "",
    operation_id="listEvaluations",
    response_model=EvaluationPage,
    responses=problem_responses(401, 403, 422),
    summary="List evaluations",
)
async def list_evaluations(
    api_key: ReadKey,
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500, pattern=STORABLE_TEXT)] = None,
    candidate_email: Annotated[str | None, Query(max_length=320, pattern=STORABLE_TEXT)] = None,
    position: Annotated[
        str | None, Query(max_length=200, pattern=STORABLE_TEXT, description="exact title")
    ] = None,
    status: Status | None = None,
) -> Response:
    """Evaluations, newest first, a page at a time."""
    read = await evaluation_service.list_evaluations(
        ctx,
        api_key=api_key,
        limit=limit,
        cursor=cursor,
        candidate_email=candidate_email,
        position=position,
        status=status,
    )
    return _read_response(read)


@router.delete(
    "/{evaluation_id}",
    operation_id="deleteEvaluation",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404),
    summary="Erase an evaluation",
)
async def delete_evaluation(
    evaluation_id: EvaluationId, api_key: DeleteKey, ctx: ContextDep
) -> None:
    """Erase an evaluation and everything derived from it, cache entries included."""
    await evaluation_service.delete_evaluation(
        ctx, evaluation_id=evaluation_id, tenant=api_key.tenant
    )
