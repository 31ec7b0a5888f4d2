"""A request made canonical once: the one JSON form and hash that every later use reads.

The idempotency fingerprint, the stored request, the prompt, the rubric hash and the result
cache's key all come from `Interview.data`, the payload dumped once; none dumps it again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from service.config import Settings
from service.evaluations.schemas import DEFAULT_RUBRIC, EvaluationCreate
from service.llm.prompts import PROMPT_VERSION

_DEFAULT_RUBRIC = DEFAULT_RUBRIC.model_dump(mode="json")


def _sha256(value: Any, **dumps: Any) -> str:
    return hashlib.sha256(json.dumps(value, **dumps).encode()).hexdigest()


@dataclass(frozen=True)
class Interview:
    """An interview to score for a tenant: the validated payload and its canonical JSON form."""

    payload: EvaluationCreate
    data: dict[str, Any]
    tenant: str

    @classmethod
    def of(cls, payload: EvaluationCreate, *, tenant: str) -> Interview:
        """Canonicalize `payload` (the only `model_dump` of a request)."""
        return cls(payload=payload, data=payload.model_dump(mode="json"), tenant=tenant)

    @cached_property
    def digest(self) -> str:
        """A hash of the parsed body: formatting and key order make no other request."""
        return _sha256(self.data, sort_keys=True, ensure_ascii=False)

    @property
    def rubric(self) -> dict[str, Any]:
        """The rubric scored against: the request's or the default one."""
        rubric: dict[str, Any] = self.data["rubric"] or _DEFAULT_RUBRIC
        return rubric

    @property
    def criteria(self) -> list[dict[str, Any]]:
        """The rubric's criteria."""
        criteria: list[dict[str, Any]] = self.rubric["criteria"]
        return criteria

    @cached_property
    def rubric_hash(self) -> str:
        """A stable hash of the rubric; criteria without anchors hash as they always have."""
        criteria = [{k: v for k, v in c.items() if v is not None} for c in self.criteria]
        return _sha256({"criteria": criteria}, sort_keys=True)

    @property
    def portfolio_url(self) -> str | None:
        """The portfolio's URL, if there is one."""
        portfolio = self.data["portfolio"]
        return portfolio["url"] if portfolio else None

    def result_key(self, settings: Settings) -> str:
        """A hash of everything that determines a scoring result; never the candidate's identity.

        The tenant is part of it: a result is never shared across tenants, nor is the fact
        that another tenant scored the same interview (`cached: true`)."""
        material = {
            "tenant": self.tenant,
            "position": self.data["position"],
            "rubric": self.rubric,
            "transcript": self.data["transcript"],
            "portfolio_url": self.portfolio_url,
            "language": self.data["language"],
            "llm_provider": settings.llm_provider,
            "llm_model": settings.llm_model,
            "prompt_version": PROMPT_VERSION,
            "scoring_samples": settings.scoring_samples,
            # needs_review is decided while scoring, from this setting.
            "review_spread": settings.review_spread,
        }
        return _sha256(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
