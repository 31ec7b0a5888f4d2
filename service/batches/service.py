"""The business rules of batches: accepting one, its progress, and when it is done."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.batches.models import EvaluationBatch
from service.batches.schemas import BatchCounts, BatchCreate, BatchItem, BatchRead
from service.cache.reads import invalidate_reads
from service.config import Settings
from service.context import AppContext
from service.database import utcnow
from service.errors import NotFound, PayloadTooLarge
from service.evaluations.models import Evaluation
from service.evaluations.schemas import EvaluationCreate
from service.evaluations.service import POLL_AFTER_S, Answer
from service.idempotency import service as idempotency_service
from service.idempotency.service import Replay
from service.jobs.queue import queued_evaluation, validation_problem
from service.webhooks import service as webhook_service

BATCHES_PATH = "/v1/evaluation-batches"
EVALUATIONS_PATH = "/v1/evaluations"
_serialize = BatchRead.__pydantic_serializer__.to_json


async def create_batch(
    ctx: AppContext,
    *,
    payload: BatchCreate,
    api_key: ApiKey,
    idempotency_key: str | None,
) -> Answer:
    """Accept a batch: 202 with its progress, or the first answer again under a repeated
    Idempotency-Key (the same rules as a single evaluation's, service/idempotency)."""
    settings = ctx.settings
    if len(payload.items) > settings.max_batch_items:
        raise PayloadTooLarge(
            f"items: a batch holds at most {settings.max_batch_items} interviews "
            f"(SCORER_MAX_BATCH_ITEMS); this one has {len(payload.items)}.",
            field="items",
        )
    await webhook_service.check_callback(payload.callback_url, settings=settings)
    claim = None
    if idempotency_key is not None:
        outcome = await idempotency_service.claim(
            ctx.sessionmaker,
            api_key_id=api_key.id,
            key=idempotency_key,
            fingerprint=_fingerprint(payload),
            settings=settings,
        )
        if isinstance(outcome, Replay):
            location = f"{BATCHES_PATH}/{outcome.batch_id}"
            headers = {"Idempotent-Replayed": "true", "Location": location}
            if outcome.status == 202:
                headers["Retry-After"] = str(POLL_AFTER_S)
            return Answer(outcome.status, outcome.body, headers)
        claim = outcome
    try:
        async with ctx.sessionmaker() as session, session.begin():
            read = await _store(session, payload=payload, api_key=api_key, settings=settings)
            body = _serialize(read)
            if claim is not None:
                await session.execute(
                    idempotency_service.completion(claim, status=202, body=body, batch_id=read.id)
                )
    except BaseException:
        if claim is not None:
            await idempotency_service.release(ctx.sessionmaker, claim=claim)
        raise
    await invalidate_reads(ctx.cache, tenant=api_key.tenant, evaluation_id=None)
    await ctx.work_committed()
    headers = {"Location": f"{BATCHES_PATH}/{read.id}"}
    if read.status == "pending":
        headers["Retry-After"] = str(POLL_AFTER_S)
    return Answer(202, body, headers)


def _fingerprint(payload: BatchCreate) -> str:
    """The batch's body as the idempotency record compares it: never equal to an evaluation's."""
    canonical = json.dumps(payload.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(b"batch\x00" + canonical.encode()).hexdigest()


async def _store(
    session: AsyncSession, *, payload: BatchCreate, api_key: ApiKey, settings: Settings
) -> BatchRead:
    """Store a batch and a pending evaluation per valid item; invalid items are recorded."""
    callback_url = str(payload.callback_url) if payload.callback_url else None
    batch = EvaluationBatch(
        api_key_id=api_key.id,
        tenant=api_key.tenant,
        total=len(payload.items),
        callback_url=callback_url,
        invalid_items=[],
        created_at=utcnow(),
    )
    session.add(batch)
    await session.flush()
    invalid: list[dict[str, Any]] = []
    evaluations: list[Evaluation] = []
    for index, item in enumerate(payload.items):
        instance = f"{BATCHES_PATH}/{batch.id}/items/{index}"
        try:
            request = EvaluationCreate.model_validate(item)
            await webhook_service.check_callback(request.callback_url, settings=settings)
        except ValidationError as exc:
            invalid.append({"index": index, "error": validation_problem(exc, instance=instance)})
            continue
        except webhook_service.CallbackRefused as exc:
            invalid.append({"index": index, "error": exc.problem(instance)})
            continue
        evaluation = queued_evaluation(request, api_key=api_key)
        evaluation.batch_id = batch.id
        evaluation.item_index = index
        evaluations.append(evaluation)
    session.add_all(evaluations)
    batch.invalid_items = invalid
    if not evaluations:
        await _complete(session, batch)
    await session.flush()
    return await _read(session, batch)


async def read_batch(session: AsyncSession, *, batch_id: str, tenant: str) -> BatchRead:
    """One of the tenant's batches with the status of every item, or 404."""
    batch = await session.scalar(
        select(EvaluationBatch).where(
            EvaluationBatch.id == batch_id, EvaluationBatch.tenant == tenant
        )
    )
    if batch is None:
        raise NotFound(f"No batch {batch_id}.")
    return await _read(session, batch)


async def _read(session: AsyncSession, batch: EvaluationBatch) -> BatchRead:
    rows = (
        await session.execute(
            select(Evaluation.id, Evaluation.item_index, Evaluation.status)
            .where(Evaluation.batch_id == batch.id)
            .order_by(Evaluation.item_index)
        )
    ).all()
    items = [
        BatchItem(
            index=index if index is not None else -1,
            status=status,
            evaluation_id=evaluation_id,
            href=f"{EVALUATIONS_PATH}/{evaluation_id}",
        )
        for evaluation_id, index, status in rows
    ]
    items += [
        BatchItem(index=entry["index"], status="invalid", error=entry["error"])
        for entry in batch.invalid_items
    ]
    items.sort(key=lambda item: item.index)
    return BatchRead(
        id=batch.id,
        status="completed" if batch.status == "completed" else "pending",
        total=batch.total,
        counts=_counts(items),
        items=items,
        callback_url=batch.callback_url,
        created_at=batch.created_at,
        completed_at=batch.completed_at,
    )


def _counts(items: Sequence[BatchItem]) -> BatchCounts:
    counts = BatchCounts()
    for item in items:
        setattr(counts, item.status, getattr(counts, item.status) + 1)
    return counts


async def item_finished(session: AsyncSession, *, batch_id: str) -> None:
    """Complete the batch if this was its last pending evaluation."""
    # The batch row is locked (PostgreSQL) so that of two items finishing at once the second
    # sees the first's commit: the batch is completed, and notified, exactly once. FOR NO KEY
    # UPDATE, as an UPDATE of its non-key columns would: a plain FOR UPDATE also waits for the
    # KEY SHARE locks that the evaluations' foreign key checks hold, and two finishers deadlock.
    batch = await session.scalar(
        select(EvaluationBatch)
        .where(EvaluationBatch.id == batch_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if batch is None or batch.status == "completed":
        return
    pending = await session.scalar(
        select(func.count())
        .select_from(Evaluation)
        .where(Evaluation.batch_id == batch_id, Evaluation.status == "pending")
    )
    if not pending:
        await _complete(session, batch)


async def _complete(session: AsyncSession, batch: EvaluationBatch) -> None:
    batch.status = "completed"
    batch.completed_at = utcnow()
    await session.flush()
    await webhook_service.batch_finished(session, batch=batch, read=await _read(session, batch))
