"""Request and response bodies of reviews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.storable import NO_NUL

Decision = Literal["strong_hire", "hire", "no_hire", "strong_no_hire"]
CriterionKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]{0,63}$")
]
CriterionScore = Annotated[int, Field(ge=1, le=5)]


class ReviewCreate(BaseModel):
    """A reviewer's adjusted scores and/or decision; the reason is mandatory."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # What `_something_to_record` checks, stated so a client or a fuzzer knows it.
            "anyOf": [
                {
                    "required": ["criterion_scores"],
                    "properties": {"criterion_scores": {"minProperties": 1}},
                },
                {"required": ["decision"], "properties": {"decision": {"type": "string"}}},
            ],
            "examples": [
                {
                    "criterion_scores": {"technical_depth": 3},
                    "decision": "no_hire",
                    "reason": "The async answer was memorised; follow-up questions failed.",
                }
            ],
        },
    )

    criterion_scores: dict[CriterionKey, CriterionScore] = Field(
        default_factory=dict,
        max_length=20,
        description="criterion key -> adjusted score (1 to 5); keys must be the evaluation's",
    )
    decision: Decision | None = Field(
        None, description="overrides the recommendation; without it, it follows from the scores"
    )
    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
        NO_NUL,
    ]

    @model_validator(mode="after")
    def _something_to_record(self) -> ReviewCreate:
        if not self.criterion_scores and self.decision is None:
            raise ValueError("a review needs criterion_scores, a decision, or both")
        return self


class ReviewRead(BaseModel):
    """One review, and the overall score and recommendation it led to."""

    id: str
    api_key_id: str | None = Field(None, description="the key of the reviewer")
    decision: Decision | None = None
    criterion_scores: dict[str, int] = Field(
        default_factory=dict, description="the scores this review changed"
    )
    reason: str
    overall_score: float | None = Field(
        None, description="after this review and the ones before it"
    )
    recommendation: str
    created_at: datetime
