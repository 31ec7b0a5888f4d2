"""POST /v1/evaluations/{id}/reviews."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.auth.dependencies import WriteKey
from service.bodies import StrictJSONRoute
from service.cache.reads import commit_then_invalidate
from service.context import ContextDep
from service.database import SessionDep
from service.errors import header_refs, problem_responses
from service.evaluations.router import EvaluationId, evaluation_links
from service.evaluations.schemas import EvaluationRead
from service.reviews import service as review_service
from service.reviews.schemas import ReviewCreate

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"], route_class=StrictJSONRoute)


@router.post(
    "/{evaluation_id}/reviews",
    operation_id="createReview",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {
            "description": "Recorded: the evaluation with the review applied",
            "headers": header_refs("Location"),
            "links": evaluation_links("$request.path.evaluation_id"),
        },
        # 400: FastAPI's answer to a body it cannot decode.
        **problem_responses(400, 401, 403, 404, 409, 422),
    },
    summary="Review an evaluation",
)
async def create_review(
    evaluation_id: EvaluationId,
    payload: ReviewCreate,
    session: SessionDep,
    api_key: WriteKey,
    ctx: ContextDep,
    response: Response,
) -> EvaluationRead:
    """Record a reviewer's adjusted scores and/or decision with a reason; history is kept."""
    evaluation = await review_service.create_review(
        session,
        evaluation_id=evaluation_id,
        payload=payload,
        api_key=api_key,
        settings=ctx.settings,
    )
    # Cached reads of the evaluation and the list would show it without the review.
    await commit_then_invalidate(
        session, ctx.cache, tenant=api_key.tenant, evaluation_id=evaluation_id
    )
    response.headers["Location"] = f"{router.prefix}/{evaluation_id}"
    return evaluation
