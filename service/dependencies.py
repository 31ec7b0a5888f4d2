"""Dependency aliases for what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.evaluations.scorer import Scorer


# async, though they await nothing: FastAPI runs a sync dependency in its 40-thread pool, a
# thread hop per request that py-spy showed on the hot path (bench/, README Performance).
async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_scorer(request: Request) -> Scorer:
    """The process's scorer."""
    scorer: Scorer = request.app.state.scorer
    return scorer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
