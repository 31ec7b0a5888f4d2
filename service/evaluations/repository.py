"""Queries on the evaluation table."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import UnprocessableRequest
from service.evaluations.models import Evaluation


def encode_cursor(evaluation: Evaluation) -> str:
    """An opaque cursor pointing after `evaluation` in newest-first order."""
    raw = json.dumps([evaluation.created_at.isoformat(), evaluation.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor points after; 422 when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_ = json.loads(raw)
        return datetime.fromisoformat(created_at), str(id_)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise UnprocessableRequest("The cursor is invalid; use next_cursor from a page.") from exc


async def get_evaluation(
    session: AsyncSession, evaluation_id: str, *, tenant: str
) -> Evaluation | None:
    """One of the tenant's evaluations by id; None when it has none by that id."""
    return await session.scalar(
        select(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.tenant == tenant)
    )


async def get_request(
    session: AsyncSession, evaluation_id: str, *, tenant: str
) -> dict[str, Any] | None:
    """The stored request of one of the tenant's evaluations; None when it has none by that id."""
    request: dict[str, Any] | None = await session.scalar(
        select(Evaluation.request).where(
            Evaluation.id == evaluation_id, Evaluation.tenant == tenant
        )
    )
    return request


async def list_evaluations(
    session: AsyncSession,
    *,
    tenant: str,
    limit: int,
    cursor: str | None,
    candidate_email: str | None,
    position: str | None,
    status: str | None,
) -> tuple[Sequence[Evaluation], str | None]:
    """A page of the tenant's evaluations, newest first, and the cursor of the next page."""
    query = select(Evaluation).where(Evaluation.tenant == tenant)
    if candidate_email:
        query = query.where(Evaluation.candidate_email == candidate_email.lower())
    if position:
        query = query.where(Evaluation.position_title == position)
    if status:
        query = query.where(Evaluation.status == status)
    if cursor:
        created_at, id_ = decode_cursor(cursor)
        query = query.where(
            or_(
                Evaluation.created_at < created_at,
                and_(Evaluation.created_at == created_at, Evaluation.id < id_),
            )
        )
    query = query.order_by(Evaluation.created_at.desc(), Evaluation.id.desc()).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def delete_evaluation(session: AsyncSession, evaluation_id: str) -> bool:
    """Delete an evaluation; whether there was one."""
    result = await session.execute(delete(Evaluation).where(Evaluation.id == evaluation_id))
    return bool(getattr(result, "rowcount", 0))
