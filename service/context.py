"""What the lifespan builds and every use case needs, handed over as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.auth.dependencies import KeyCache
from service.cache.backend import ResilientBackend
from service.config import Settings
from service.evaluations.cached import CachedScorer
from service.writer import GroupWriter


@dataclass(frozen=True)
class AppContext:
    """The process's clients: built once in the lifespan, closed there."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http_client: httpx.AsyncClient
    cache: ResilientBackend
    scorer: CachedScorer
    writer: GroupWriter
    keys: KeyCache
    # Whether reads are cached (not with several API processes and no Redis to share).
    reads_cached: bool

    async def work_committed(self) -> None:
        """Tell the workers that work was committed outside the writer (a batch, say)."""
        await self.writer.announce_work()


# async, though it awaits nothing: FastAPI runs a sync dependency in its thread pool.
async def get_context(request: Request) -> AppContext:
    """The app's context."""
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]
