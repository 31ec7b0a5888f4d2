"""The analyzer's answer, per its contract (docs/failures.md); all of it untrusted."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

Item = Annotated[str, StringConstraints(max_length=1_000)]


class Analysis(BaseModel):
    """A 200 answer of POST /analyze."""

    score: int = Field(ge=0, le=100)
    summary: Annotated[str, StringConstraints(max_length=4_000)]
    strengths: list[Item] = Field(default_factory=list, max_length=20)
    risks: list[Item] = Field(default_factory=list, max_length=20)
    languages: list[Item] = Field(default_factory=list, max_length=50)
