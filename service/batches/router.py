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
from service.errors import problem_responses
from service.evaluations.router import JSON, IdempotencyKeyHeader

router = APIRouter(prefix=batch_service.BATCHES_PATH, tags=["batches"], route_class=StrictJSONRoute)

BatchId = Annotated[str, Path(max_length=64, description="the batch's id")]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchRead,
    responses=problem_responses(401, 403, 409, 413, 422),
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


@router.get("/{batch_id}", responses=problem_responses(401, 403, 404), summary="A batch's progress")
async def read_batch(batch_id: BatchId, session: SessionDep, api_key: ReadKey) -> BatchRead:
    """The batch, counts by status, and a link to each item's evaluation."""
    return await batch_service.read_batch(session, batch_id=batch_id, tenant=api_key.tenant)
