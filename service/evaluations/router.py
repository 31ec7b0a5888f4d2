"""The /v1/evaluations endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path, Query, Response, status

from service.auth.dependencies import DeleteKey, ReadKey, WriteKey
from service.cache.reads import (
    CacheDep,
    cached_read,
    erase_evaluation,
    evaluation_key,
    invalidate_reads,
    list_key,
)
from service.database import SessionDep
from service.dependencies import ScorerDep, SettingsDep
from service.errors import problem_responses
from service.evaluations import service as evaluation_service
from service.evaluations.schemas import EvaluationCreate, EvaluationPage, EvaluationRead, Status
from service.idempotency.dependency import IdempotencyDep, replay_response
from service.idempotency.service import Replay
from service.jobs import service as job_service
from service.jobs.runner import JobRunner, get_runner
from service.notifications.delivery import DelivererDep

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])

EvaluationId = Annotated[str, Path(max_length=64, description="the evaluation's id")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EvaluationRead,
    responses={
        202: {"description": "Accepted (Prefer: respond-async): poll the Location"},
        **problem_responses(401, 403, 409, 413, 422, 502, 503, 504),
    },
    summary="Score an interview",
)
async def create_evaluation(
    payload: EvaluationCreate,
    session: SessionDep,
    api_key: WriteKey,
    scorer: ScorerDep,
    settings: SettingsDep,
    response: Response,
    idempotency: IdempotencyDep,
    cache: CacheDep,
    runner: Annotated[JobRunner, Depends(get_runner)],
    background_tasks: BackgroundTasks,
    deliverer: DelivererDep,
    prefer: Annotated[str | None, Header(description="respond-async: answer 202 at once")] = None,
) -> Any:
    """Score an interview with the LLM and the portfolio analyzer, concurrently, and store it.

    With `Prefer: respond-async`: 202 at once with the pending evaluation and its Location;
    it is scored in the background (poll the Location, or give a `callback_url`).
    """
    respond_async = job_service.prefers_async(prefer)
    if not respond_async:
        job_service.check_synchronous(payload)

    async def score() -> EvaluationRead:
        if respond_async:
            return await job_service.submit_evaluation(
                session, payload=payload, api_key=api_key, settings=settings
            )
        return await evaluation_service.create_evaluation(
            session, payload=payload, api_key=api_key, scorer=scorer, settings=settings
        )

    accepted = status.HTTP_202_ACCEPTED if respond_async else status.HTTP_201_CREATED
    outcome = await idempotency.run(
        session, api_key=api_key, payload=payload, action=score, status=accepted
    )
    if isinstance(outcome, Replay):
        # A replay sends no new email: the first request's are already in the outbox.
        return replay_response(outcome, location=f"{router.prefix}/{outcome.body['id']}")
    await invalidate_reads(cache, evaluation_id=None)
    response.headers["Location"] = f"{router.prefix}/{outcome.id}"
    if respond_async:
        response.status_code = accepted
        response.headers["Preference-Applied"] = "respond-async"
        runner.wake()  # committed by idempotency.run: a worker can claim it now
    if outcome.notifications:
        # Runs after the response, hence after the session dependency committed the rows.
        background_tasks.add_task(deliverer.deliver_evaluation, outcome.id)
    return outcome


@router.get(
    "/{evaluation_id}", responses=problem_responses(401, 403, 404), summary="One evaluation"
)
@cached_read(name="evaluation", key_builder=evaluation_key)
async def read_evaluation(
    evaluation_id: EvaluationId,
    session: SessionDep,
    _key: ReadKey,
    include: Annotated[
        Literal["provenance"] | None,
        Query(
            description="`provenance`: add the prompt version, rubric hash, model, seed, "
            "system fingerprints, and the raw output and tokens of every LLM attempt"
        ),
    ] = None,
) -> EvaluationRead:
    """One evaluation; also the way to poll an asynchronous one."""
    return await evaluation_service.read_evaluation(
        session, evaluation_id=evaluation_id, include_provenance=include == "provenance"
    )


@router.get("", responses=problem_responses(401, 403, 422), summary="List evaluations")
@cached_read(name="evaluations", key_builder=list_key)
async def list_evaluations(
    session: SessionDep,
    _key: ReadKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    candidate_email: Annotated[str | None, Query(max_length=320)] = None,
    position: Annotated[str | None, Query(max_length=200, description="exact title")] = None,
    status: Status | None = None,
) -> EvaluationPage:
    """Evaluations, newest first, a page at a time."""
    return await evaluation_service.list_evaluations(
        session,
        limit=limit,
        cursor=cursor,
        candidate_email=candidate_email,
        position=position,
        status=status,
    )


@router.delete(
    "/{evaluation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404),
    summary="Erase an evaluation",
)
async def delete_evaluation(
    evaluation_id: EvaluationId,
    session: SessionDep,
    _key: DeleteKey,
    scorer: ScorerDep,
    cache: CacheDep,
) -> None:
    """Erase an evaluation and everything derived from it, cache entries included."""
    await erase_evaluation(session, evaluation_id=evaluation_id, scorer=scorer, backend=cache)
