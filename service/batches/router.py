"""The /v1/evaluation-batches endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.auth.dependencies import ReadKey, WriteKey
from service.batches import service as batch_service
from service.batches.schemas import BatchCreate, BatchRead
from service.cache.reads import invalidate_reads
from service.context import ContextDep
from service.database import SessionDep
from service.errors import header_refs, problem_responses
from service.evaluations.service import POLL_AFTER_S
from service.storable import STORABLE_TEXT

router = APIRouter(prefix=batch_service.BATCHES_PATH, tags=["batches"])

BatchId = Annotated[str, Path(max_length=64, pattern=STORABLE_TEXT, description="the batch's id")]


@router.post(
    "",
    operation_id="createEvaluationBatch",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {
            "description": "Accepted: the batch, its items pending or invalid",
            "headers": header_refs("Location", "Retry-After"),
            "links": {
                "GetEvaluationBatch": {
                    "operationId": "getEvaluationBatch",
                    "parameters": {"batch_id": "$response.body#/id"},
                }
            },
        },
        # 400: FastAPI's answer to a body it cannot decode.
        **problem_responses(400, 401, 403, 413, 422),
    },
    summary="Score many interviews in the background",
)
async def create_batch(
    payload: BatchCreate,
    session: SessionDep,
    api_key: WriteKey,
    ctx: ContextDep,
    response: Response,
) -> BatchRead:
    """Accept up to SCORER_MAX_BATCH_ITEMS interviews; each invalid one is reported alone."""
    batch = await batch_service.create_batch(
        session, payload=payload, api_key=api_key, settings=ctx.settings
    )
    await session.commit()
    await invalidate_reads(ctx.cache, evaluation_id=None)
    await ctx.work_committed()
    response.headers["Location"] = f"{router.prefix}/{batch.id}"
    _poll_after(batch, response)
    return batch


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
    batch_id: BatchId, session: SessionDep, _key: ReadKey, response: Response
) -> BatchRead:
    """The batch, counts by status, and a link to each item's evaluation."""
    batch = await batch_service.read_batch(session, batch_id=batch_id)
    _poll_after(batch, response)
    return batch


def _poll_after(batch: BatchRead, response: Response) -> None:
    """Retry-After on a batch still pending: when to read it again."""
    if batch.status == "pending":
        response.headers["Retry-After"] = str(POLL_AFTER_S)
