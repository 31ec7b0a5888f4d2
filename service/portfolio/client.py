"""Calls the portfolio analyzer; every failure becomes a status, never an exception."""

from __future__ import annotations

import asyncio
import logging

import httpx
from pydantic import ValidationError

from service.config import Settings
from service.evaluations.schemas import PortfolioResult
from service.metrics import UPSTREAM_INVALID, outcome_of_status, track_upstream
from service.portfolio.schemas import Analysis

logger = logging.getLogger(__name__)


class PortfolioAnalyzer:
    """The analyzer client, sharing the process's HTTP client."""

    def __init__(self, *, settings: Settings, http_client: httpx.AsyncClient) -> None:
        self._url = (
            settings.portfolio_analyzer_url.rstrip("/") + "/analyze"
            if settings.portfolio_analyzer_url
            else None
        )
        token = settings.portfolio_analyzer_token
        self._headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        self._timeout_s = settings.portfolio_timeout_s
        self._timeout = httpx.Timeout(settings.portfolio_timeout_s)
        self._http = http_client

    async def analyze(self, *, url: str, position_title: str) -> PortfolioResult:
        """The analysis of `url`; the candidate's identity is never sent."""
        if self._url is None:
            return PortfolioResult(status="skipped", detail="no portfolio analyzer is configured")
        try:
            # httpx's timeouts bound each read; this bounds the whole call, so an analyzer
            # that trickles bytes cannot hold the evaluation past its timeout either.
            async with asyncio.timeout(self._timeout_s), track_upstream("analyzer") as call:
                response = await self._http.post(
                    self._url,
                    json={"url": url, "position_title": position_title},
                    headers=self._headers,
                    timeout=self._timeout,
                )
                call.outcome = outcome_of_status(response.status_code)
        except (TimeoutError, httpx.TimeoutException):
            return _unavailable("the analyzer did not answer in time")
        except httpx.HTTPError as exc:
            return _unavailable(f"the analyzer could not be reached ({type(exc).__name__})")
        if response.status_code in (400, 404):
            return PortfolioResult(
                status="rejected",
                detail=f"the analyzer could not analyze this URL (status {response.status_code})",
            )
        if response.status_code != 200:
            return _unavailable(f"the analyzer answered status {response.status_code}")
        try:
            analysis = Analysis.model_validate_json(response.content)
        except ValidationError:
            UPSTREAM_INVALID.labels("analyzer").inc()
            return _unavailable("the analyzer's answer did not match its contract")
        return PortfolioResult(
            status="ok",
            score=analysis.score,
            summary=analysis.summary,
            strengths=analysis.strengths,
            risks=analysis.risks,
        )


def _unavailable(detail: str) -> PortfolioResult:
    logger.warning("portfolio analyzer unavailable", extra={"reason": detail})
    return PortfolioResult(status="unavailable", detail=detail)
