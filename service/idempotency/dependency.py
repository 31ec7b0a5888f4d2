"""The Idempotency-Key header, and the wrapper that runs a POST under it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.models import ApiKey
from service.config import Settings
from service.evaluations.schemas import EvaluationCreate, EvaluationRead
from service.idempotency import service as idempotency_service
from service.idempotency.service import Replay

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description=(
            "Makes retries safe: the same key and body return the first response "
            "(`Idempotent-Replayed: true`), another body 422, while the first runs 409. "
            "Scoped to the API key; remembered for SCORER_IDEMPOTENCY_TTL_S."
        ),
    ),
]


@dataclass(frozen=True)
class Idempotency:
    """The request's Idempotency-Key (None without one) and what running under it needs."""

    key: str | None
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings

    async def run(
        self,
        session: AsyncSession,
        *,
        api_key: ApiKey,
        payload: EvaluationCreate,
        action: Callable[[], Awaitable[EvaluationRead]],
        status: int,
    ) -> EvaluationRead | Replay:
        """Run `action` once per key, then commit; a replay of the first response otherwise.

        The commit is made here, not by the session dependency, so that the key's record
        and the evaluation are visible before the caller invalidates cached lists.
        """
        if self.key is None:
            result = await action()
            await session.commit()
            return result
        outcome = await idempotency_service.claim(
            self.sessionmaker,
            api_key_id=api_key.id,
            key=self.key,
            fingerprint=idempotency_service.request_hash(payload),
            settings=self.settings,
        )
        if isinstance(outcome, Replay):
            return outcome
        try:
            result = await action()
            await idempotency_service.complete(
                session,
                claim=outcome,
                status=status,
                body=result.model_dump(mode="json"),
                evaluation_id=result.id,
            )
            await session.commit()
        except BaseException:
            # Rolled back first: on SQLite the release would wait on this session's lock.
            await session.rollback()
            await idempotency_service.release(self.sessionmaker, claim=outcome)
            raise
        return result


def replay_response(replay: Replay, *, location: str) -> JSONResponse:
    """The first response under a key, marked as a replay."""
    return JSONResponse(
        replay.body,
        status_code=replay.status,
        headers={"Idempotent-Replayed": "true", "Location": location},
    )


async def get_idempotency(request: Request, key: IdempotencyKeyHeader = None) -> Idempotency:
    """The request's Idempotency-Key, validated (1 to 255 visible ASCII characters)."""
    return Idempotency(
        key=key, sessionmaker=request.app.state.sessionmaker, settings=request.app.state.settings
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
