"""The /v1/evaluation-batches endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.auth.dependencies import ReadKey, WriteKey
from service.batches import service as batch_service
from service.batches.schemas import BatchCreate, BatchRead
from service.bodies import StrictJSONRoute
from service.context import ContextDep
from service.database import SessionDep
from service.errors import header_refs, problem_responses
from service.evaluations.router import JSON, IdempotencyKeyHeader
from service.evaluations.service import POLL_AFTER_S
from service.storable import STORABLE_TEXT

router = APIRouter(prefix=batch_service.BATCHES_PATH, tags=["batches"], route_class=StrictJSONRoute)

BatchId = Annotated[str, Path(max_length=64, pattern=STORABLE_TEXT, description="the batch's id")]


@router.post(
    "",
    operation_id="createEvaluationBatch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchRead,
    responses={
        202: {
            "description": "Accepted: the batch, its items pending or invalid",
            "headers": header_refs("Location", "Retry-After", "Idempotent-Replayed"),
            "links": {
                "GetEvaluationBatch": {
                    "operationId": "getEvaluationBatch",
                    "parameters": {"batch_id": "$response.body#/id"},
                }
            },
        },
        **problem_responses(401, 403, 409, 413, 422),
    },
    summary="Score many interviews in the background",
)
async def create_batch(
    payload: BatchCreate,
    api_key: WriteKey,
    ctx: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Accept up to SCORER_MAX_BATCH_ITEMS interviews; each invalid one is reported alone."""
    answer = await batch_service.create_batch(
        ctx, payload=payload, api_key=api_key, idempotency_key=idempotency_key
    )
    return Response(answer.body, status_code=answer.status, headers=answer.headers, media_type=JSON)


@router.get(
    "/{batch_id}",
    operation_id="getEvaluationBatch",
    responses={
        200: {
            "description": "The batch; while it is pending, Retry-After says when to ask again",
            "headers": header_refs("Retry-After"),
        },
        **problem_responses(401, 403, 404),
    },
    summary="A batch's progress",
)
async def read_batch(
    batch_id: BatchId, session: SessionDep, api_key: ReadKey, response: Response
) -> BatchRead:
    """The batch, counts by status, and a link to each item's evaluation."""
    batch = await batch_service.read_batch(session, batch_id=batch_id, tenant=api_key.tenant)
    if batch.status == "pending":
        response.headers["Retry-After"] = str(POLL_AFTER_S)
    return batch
