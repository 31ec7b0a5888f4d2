"""Dependency aliases for what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.evaluations.scorer import Scorer


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_scorer(request: Request) -> Scorer:
    """The process's scorer."""
    scorer: Scorer = request.app.state.scorer
    return scorer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
