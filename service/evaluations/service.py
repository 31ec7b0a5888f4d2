"""The use cases of evaluations: score one, read one, list them, erase one.

`create_evaluation` is the whole of POST /v1/evaluations: the router hands it the parsed
request and the process's context and sends back the `Answer` it returns. The payload is made
canonical once (service/evaluations/canonical.py); the answer is built once from the scoring
result and serialized once, and those bytes are both the idempotency record and the HTTP body.
The rows (evaluation, follow-up mails, idempotency record) are stored by the process's group
writer in one commit with other requests' rows; nothing else on the path writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table

from service.auth.models import ApiKey
from service.cache.reads import (
    evaluation_read_key,
    invalidate_reads,
    list_read_key,
)
from service.config import Settings
from service.context import AppContext
from service.database import new_id, utcnow
from service.errors import NotFound, UnprocessableRequest
from service.evaluations import repository
from service.evaluations.canonical import Interview
from service.evaluations.erasures import forget_erased
from service.evaluations.models import Erasure, Evaluation
from service.evaluations.schemas import (
    Candidate,
    EvaluationCreate,
    EvaluationPage,
    EvaluationRead,
    NotificationRead,
    PositionRead,
    ProvenanceRead,
    Usage,
)
from service.evaluations.scorer import ScoringResult
from service.evaluations.scoring import (
    Thresholds,
    interview_score,
    overall_score,
    recommendation,
)
from service.idempotency import service as idempotency_service
from service.idempotency.service import Replay
from service.notifications import outbox
from service.notifications.follow_ups import follow_up_rows
from service.notifications.outbox import OutboxMessage
from service.reviews.views import review_fields
from service.webhooks import service as webhook_service
from service.writer import Write

EVALUATIONS_PATH = "/v1/evaluations"
_EVALUATION = cast(Table, Evaluation.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_serialize = EvaluationRead.__pydantic_serializer__.to_json
_serialize_page = EvaluationPage.__pydantic_serializer__.to_json
# A mail in one of these states changes no more (a failed one only when given up).
_FINAL_MAIL = frozenset({"sent", "cancelled"})
# Retry-After of an answer that names work still pending: when to ask again.
POLL_AFTER_S = 1
_ACCEPTED_HEADERS = {"Preference-Applied": "respond-async", "Retry-After": str(POLL_AFTER_S)}


@dataclass(frozen=True)
class Answer:
    """What the router sends: the status, the body's bytes and the headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def thresholds(settings: Settings) -> Thresholds:
    """The recommendation thresholds from the settings."""
    return Thresholds(
        strong_hire=settings.threshold_strong_hire,
        hire=settings.threshold_hire,
        no_hire=settings.threshold_no_hire,
    )


def scored_fields(result: ScoringResult, *, settings: Settings) -> dict[str, Any]:
    """The columns a scoring result sets on its evaluation, the derived scores included."""
    interview = interview_score((c.score, c.weight) for c in result.criteria)
    portfolio = result.portfolio
    portfolio_score = portfolio.score if portfolio and portfolio.status == "ok" else None
    overall = overall_score(interview, portfolio_score, portfolio_weight=settings.portfolio_weight)
    return {
        "status": "completed",
        "overall_score": overall,
        "recommendation": recommendation(overall, thresholds(settings)),
        "partial": portfolio is not None and portfolio.status in ("unavailable", "rejected"),
        "needs_review": result.needs_review,
        "cached": result.cached,
        "model": result.model,
        "prompt_version": result.prompt_version,
        "rubric_hash": result.rubric_hash,
        "provenance": result.provenance,
        "result": result.model_dump(
            mode="json", include={"criteria", "summary", "portfolio", "usage", "timings_ms"}
        ),
        "completed_at": utcnow(),
    }


def apply_result(evaluation: Evaluation, result: ScoringResult, *, settings: Settings) -> None:
    """Fill a pending evaluation (a worker's job) with a scoring result."""
    for name, value in scored_fields(result, settings=settings).items():
        setattr(evaluation, name, value)


def evaluation_row(interview: Interview, *, api_key: ApiKey, status: str) -> dict[str, Any]:
    """Every column of a new evaluation of `interview`, as a Core insert takes it."""
    candidate = interview.data["candidate"]
    position = interview.data["position"]
    return {
        "id": new_id(),
        "status": status,
        "api_key_id": api_key.id,
        "tenant": api_key.tenant,
        "candidate_name": candidate["name"],
        "candidate_email": candidate["email"].lower(),
        "candidate_external_id": candidate["external_id"],
        "position_title": position["title"],
        "position_level": position["level"],
        "request": interview.data,
        "result": None,
        "overall_score": None,
        "recommendation": None,
        "partial": False,
        "needs_review": False,
        "cached": False,
        "model": None,
        "prompt_version": None,
        "rubric_hash": None,
        "provenance": None,
        "error": None,
        "created_at": utcnow(),
        "completed_at": None,
        "claimed_by": None,
        "claimed_until": None,
        "batch_id": None,
        "item_index": None,
        "attempts": 0,
        "last_error": None,
    }


def _new_view(
    row: dict[str, Any], *, result: ScoringResult | None, mails: Sequence[dict[str, Any]]
) -> EvaluationRead:
    """The API view of an evaluation just made, from its row: no validation, nothing read."""
    return EvaluationRead.model_construct(
        id=row["id"],
        status=row["status"],
        candidate=Candidate.model_construct(
            name=row["candidate_name"],
            email=row["candidate_email"],
            external_id=row["candidate_external_id"],
        ),
        position=PositionRead.model_construct(
            title=row["position_title"], level=row["position_level"]
        ),
        overall_score=row["overall_score"],
        recommendation=row["recommendation"],
        criteria=result.criteria if result else [],
        summary=result.summary if result else None,
        portfolio=result.portfolio if result else None,
        partial=row["partial"],
        needs_review=row["needs_review"],
        model_overall_score=row["overall_score"],
        model_recommendation=row["recommendation"],
        review=None,
        reviews=[],
        model=row["model"],
        prompt_version=row["prompt_version"],
        usage=result.usage if result else Usage(),
        cached=row["cached"],
        notifications=[
            NotificationRead.model_construct(
                to=m["recipient"],
                kind=m["kind"],
                status="queued",
                attempts=0,
                next_attempt_at=None,
            )
            for m in mails
        ],
        timings_ms=result.timings_ms if result else {},
        error=None,
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        provenance=None,
    )


async def create_evaluation(
    ctx: AppContext,
    *,
    payload: EvaluationCreate,
    api_key: ApiKey,
    idempotency_key: str | None,
    respond_async: bool,
) -> Answer:
    """Score an interview and store the evaluation; or, asked to respond async, queue it.

    An upstream error stores nothing and releases the Idempotency-Key; a repeat of the key
    answers the first response's bytes again.
    """
    settings = ctx.settings
    interview = Interview.of(payload, tenant=api_key.tenant)
    if respond_async:
        await webhook_service.check_callback(payload.callback_url, settings=settings)
    elif payload.callback_url is not None:
        raise UnprocessableRequest("callback_url needs Prefer: respond-async.")
    claim = None
    if idempotency_key is not None:
        outcome = await idempotency_service.claim(
            ctx.sessionmaker,
            api_key_id=api_key.id,
            key=idempotency_key,
            fingerprint=interview.digest,
            settings=settings,
        )
        if isinstance(outcome, Replay):
            location = f"{EVALUATIONS_PATH}/{outcome.evaluation_id}"
            headers = {"Idempotent-Replayed": "true", "Location": location}
            if outcome.status == 202:
                headers |= _ACCEPTED_HEADERS
            return Answer(outcome.status, outcome.body, headers)
        claim = outcome
    try:
        write, view, status = await _prepare(
            ctx, interview, api_key=api_key, respond_async=respond_async
        )
        body = _serialize(view)
        if claim is not None:
            write.update(
                idempotency_service.completion(
                    claim, status=status, body=body, evaluation_id=view.id
                )
            )
        await ctx.writer.write(write)
    except BaseException:
        if claim is not None:
            await idempotency_service.release(ctx.sessionmaker, claim=claim)
        raise
    if ctx.reads_cached:
        await invalidate_reads(ctx.cache, tenant=api_key.tenant, evaluation_id=None)
    headers = {"Location": f"{EVALUATIONS_PATH}/{view.id}"}
    if respond_async:
        headers |= _ACCEPTED_HEADERS
    return Answer(status, body, headers)


async def _prepare(
    ctx: AppContext, interview: Interview, *, api_key: ApiKey, respond_async: bool
) -> tuple[Write, EvaluationRead, int]:
    """The rows to store, the view to answer and its status."""
    if respond_async:
        row = evaluation_row(interview, api_key=api_key, status="pending")
        # Claimable by any worker at once.
        row["claimed_until"] = row["created_at"]
        write = Write(wakes_worker=True).insert(_EVALUATION, [row])
        return write, _new_view(row, result=None, mails=[]), 202
    # No connection is held while the upstreams are awaited: nothing is written before.
    result = await ctx.scorer.score(interview)
    row = evaluation_row(interview, api_key=api_key, status="completed")
    row.update(scored_fields(result, settings=ctx.settings))
    mails = follow_up_rows(
        evaluation_id=row["id"],
        candidate_email=row["candidate_email"],
        notify=interview.data["notify"],
        language=interview.data["language"],
        settings=ctx.settings,
        now=row["created_at"],
    )
    # In one transaction: the evaluation and its mails are both stored, or neither.
    write = Write(wakes_worker=bool(mails)).insert(_EVALUATION, [row]).insert(_OUTBOX, mails)
    return write, _new_view(row, result=result, mails=mails), 201


def _is_final(evaluation: Evaluation) -> bool:
    """Whether nothing but the API itself can change what the evaluation shows."""
    if evaluation.status not in ("completed", "failed"):
        return False
    return all(
        m.status in _FINAL_MAIL or (m.status == "failed" and m.next_attempt_at is None)
        for m in evaluation.outbox_messages
    )


@dataclass(frozen=True)
class Read:
    """A read's bytes, whether they came from the cache (None: reads are not cached), and
    when to read again if what it shows is still pending."""

    body: bytes
    hit: bool | None
    retry_after_s: int | None = None


async def read_evaluation(
    ctx: AppContext, *, evaluation_id: str, include_provenance: bool, api_key: ApiKey
) -> Read:
    """One evaluation's bytes, or 404; with its provenance when asked."""
    key = None
    if ctx.reads_cached:
        key = await evaluation_read_key(
            ctx.cache,
            evaluation_id=evaluation_id,
            variant=(api_key.tenant, evaluation_id, str(include_provenance), api_key.scopes),
        )
        hit = await ctx.cache.get(key)
        if hit is not None:
            return Read(hit, True)
    async with ctx.sessionmaker() as session:
        evaluation = await repository.get_evaluation(session, evaluation_id, tenant=api_key.tenant)
        if evaluation is None:
            raise NotFound(f"No evaluation {evaluation_id}.")
        view = to_read(evaluation)
        if include_provenance:
            view.provenance = provenance_read(evaluation)
    body = _serialize(view)
    if key is not None and _is_final(evaluation):
        await ctx.cache.set(key, body, ctx.cache.ttl_s)
    pending = POLL_AFTER_S if evaluation.status == "pending" else None
    return Read(body, False if key is not None else None, retry_after_s=pending)


def provenance_read(evaluation: Evaluation) -> ProvenanceRead | None:
    """How an evaluation was scored, from what was stored; None before it was scored."""
    if evaluation.provenance is None:
        return None
    return ProvenanceRead.model_validate(
        {
            **evaluation.provenance,
            "prompt_version": evaluation.prompt_version,
            "rubric_hash": evaluation.rubric_hash,
        }
    )


async def list_evaluations(
    ctx: AppContext,
    *,
    api_key: ApiKey,
    limit: int,
    cursor: str | None,
    candidate_email: str | None,
    position: str | None,
    status: str | None,
) -> Read:
    """A page of evaluations, newest first, as bytes."""
    key = None
    if ctx.reads_cached:
        variant = (str(limit), cursor or "", candidate_email or "", position or "", status or "")
        key = await list_read_key(
            ctx.cache, tenant=api_key.tenant, variant=(*variant, api_key.scopes)
        )
        hit = await ctx.cache.get(key)
        if hit is not None:
            return Read(hit, True)
    async with ctx.sessionmaker() as session:
        rows, next_cursor = await repository.list_evaluations(
            session,
            tenant=api_key.tenant,
            limit=limit,
            cursor=cursor,
            candidate_email=candidate_email,
            position=position,
            status=status,
        )
        body = _serialize_page(EvaluationPage(items=to_reads(rows), next_cursor=next_cursor))
    if key is not None and all(_is_final(row) for row in rows):
        await ctx.cache.set(key, body, ctx.cache.ttl_s)
    return Read(body, False if key is not None else None)


async def delete_evaluation(ctx: AppContext, *, evaluation_id: str, tenant: str) -> None:
    """Erase one of the tenant's evaluations and everything derived from it, or 404.

    In one transaction: its unsent mails and webhooks are cancelled and their contents erased,
    its idempotency records go with it (ON DELETE CASCADE), and the erasure is recorded so
    that every other process forgets its cached copies within SCORER_ERASURE_POLL_S
    (service/evaluations/erasures.py). This process forgets its own at once.
    """
    async with ctx.sessionmaker() as session, session.begin():
        request = await repository.get_request(session, evaluation_id, tenant=tenant)
        if request is None:
            raise NotFound(f"No evaluation {evaluation_id}.")
        erasure = Erasure(
            evaluation_id=evaluation_id,
            tenant=tenant,
            result_key=_result_key(request, tenant=tenant, settings=ctx.settings),
        )
        await outbox.cancel_for_evaluation(session, evaluation_id=evaluation_id)
        if not await repository.delete_evaluation(session, evaluation_id):
            raise NotFound(f"No evaluation {evaluation_id}.")
        session.add(erasure)
    # After the commit: a reader in between would cache the old state under the new token.
    await forget_erased(erasure, cache=ctx.cache, scorer=ctx.scorer)


def _result_key(request: dict[str, Any], *, tenant: str, settings: Settings) -> str | None:
    """The result cache's key of a stored request; None when an older schema stored it."""
    try:
        payload = EvaluationCreate.model_validate(request)
    except ValidationError:
        return None
    return Interview.of(payload, tenant=tenant).result_key(settings)


def to_read(evaluation: Evaluation) -> EvaluationRead:
    """The API view of a stored evaluation."""
    result = evaluation.result or {}
    return EvaluationRead.model_validate(
        {
            "id": evaluation.id,
            "status": evaluation.status,
            "candidate": Candidate(
                name=evaluation.candidate_name,
                email=evaluation.candidate_email,
                external_id=evaluation.candidate_external_id,
            ),
            "position": PositionRead(
                title=evaluation.position_title, level=evaluation.position_level
            ),
            "overall_score": evaluation.overall_score,
            "recommendation": evaluation.recommendation,
            "criteria": result.get("criteria", []),
            "summary": result.get("summary"),
            "portfolio": result.get("portfolio"),
            "partial": evaluation.partial,
            "needs_review": evaluation.needs_review,
            "model": evaluation.model,
            "prompt_version": evaluation.prompt_version,
            "usage": result.get("usage") or {},
            "cached": evaluation.cached,
            "notifications": [
                NotificationRead(
                    to=m.recipient,
                    kind=m.kind,
                    status=m.status,
                    attempts=m.attempts,
                    next_attempt_at=m.next_attempt_at if m.status == "failed" else None,
                )
                for m in evaluation.outbox_messages
            ],
            "timings_ms": result.get("timings_ms") or {},
            "error": evaluation.error,
            "created_at": evaluation.created_at,
            "completed_at": evaluation.completed_at,
            **review_fields(evaluation),
        }
    )


def to_reads(rows: Sequence[Evaluation]) -> list[EvaluationRead]:
    """The API views of several evaluations."""
    return [to_read(row) for row in rows]
