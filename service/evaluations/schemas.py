"""Request and response bodies of the evaluation endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    UrlConstraints,
    field_validator,
)

from service.evaluations.email_address import EmailAddress
from service.reviews.schemas import ReviewRead
from service.storable import NO_NUL

MAX_TRANSCRIPT_TURNS = 100
MAX_QUESTION_CHARS = 2_000
MAX_ANSWER_CHARS = 10_000
MAX_CRITERIA = 20
MAX_RECRUITERS = 10
MAX_SCORE = 5
MAX_WEIGHT = 100

Status = Literal["pending", "completed", "failed"]
Recommendation = Literal[
    "strong_hire", "hire", "no_hire", "strong_no_hire", "insufficient_evidence"
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    NO_NUL,
]
Email = EmailAddress
CriterionKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]{0,63}$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Strict):
    """Who was interviewed; used for storage and emails only, never sent to the LLM."""

    name: ShortText
    email: Email
    external_id: Annotated[str, StringConstraints(max_length=200), NO_NUL] | None = None


class PositionIn(_Strict):
    """The position the candidate interviewed for."""

    title: ShortText
    level: Annotated[str, StringConstraints(max_length=100), NO_NUL] | None = None
    description: Annotated[str, StringConstraints(max_length=4_000), NO_NUL] | None = None


AnchorText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    NO_NUL,
]


class Criterion(_Strict):
    """One rubric criterion."""

    key: CriterionKey
    description: Annotated[str, StringConstraints(min_length=1, max_length=1_000), NO_NUL]
    # Finite: 1e400 reads as infinity, and is refused naming the field like any other.
    weight: float = Field(default=1.0, gt=0, le=MAX_WEIGHT, allow_inf_nan=False)
    anchors: dict[Literal["1", "3", "5"], AnchorText] | None = Field(
        default=None,
        max_length=3,
        description="what a 1, a 3 and a 5 mean for this criterion; the prompt's general "
        "anchors apply to those left out",
    )


class Rubric(_Strict):
    """What the answers are scored against."""

    criteria: list[Criterion] = Field(min_length=1, max_length=MAX_CRITERIA)

    @field_validator("criteria")
    @classmethod
    def _unique_keys(cls, criteria: list[Criterion]) -> list[Criterion]:
        keys = [c.key for c in criteria]
        if len(set(keys)) != len(keys):
            raise ValueError("criterion keys must be unique")
        return criteria


DEFAULT_RUBRIC = Rubric(
    criteria=[
        Criterion(
            key="technical_depth",
            description="Understands the technologies discussed and their trade-offs",
            weight=2,
            anchors={
                "1": "Wrong or empty on the technologies asked about; buzzwords without substance",
                "3": "Correct on the essentials, but misses trade-offs or is vague on details",
                "5": "Precise and correct, names trade-offs and edge cases, and when not to use it",
            },
        ),
        Criterion(
            key="problem_solving",
            description="Breaks problems down and reasons towards workable solutions",
            weight=2,
            anchors={
                "1": "No approach, or jumps to an answer that does not solve the problem",
                "3": "A workable approach, with steps or alternatives left unexamined",
                "5": "Breaks the problem down, weighs alternatives, checks and measures the result",
            },
        ),
        Criterion(
            key="communication",
            description="Explains clearly and concisely",
            weight=1,
            anchors={
                "1": "Answers are hard to follow or do not address the question",
                "3": "Understandable and on topic, with digressions or imprecise wording",
                "5": "Direct, structured and concise; answers exactly what was asked",
            },
        ),
    ]
)


class Turn(_Strict):
    """One question and the candidate's answer."""

    question: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS), NO_NUL]
    answer: Annotated[str, StringConstraints(max_length=MAX_ANSWER_CHARS), NO_NUL]


class PortfolioIn(_Strict):
    """A link to the candidate's work."""

    url: HttpUrl = Field(max_length=2048)


class Notify(_Strict):
    """Who gets follow-up emails."""

    candidate: bool = True
    recruiters: list[Email] = Field(default_factory=list, max_length=MAX_RECRUITERS)


EXAMPLE_REQUEST: dict[str, Any] = {
    "candidate": {"name": "Jane Doe", "email": "jane@example.com", "external_id": "ats-4411"},
    "position": {
        "title": "Backend Engineer",
        "level": "senior",
        "description": "Python, async, PostgreSQL",
    },
    "rubric": {
        "criteria": [
            {
                "key": "technical_depth",
                "description": "Understands async I/O and its trade-offs",
                "weight": 2,
            },
            {"key": "communication", "description": "Explains clearly and concisely", "weight": 1},
        ]
    },
    "transcript": [
        {
            "question": "When would you not use asyncio?",
            "answer": "For CPU-bound work the event loop gives nothing; I would use processes.",
        }
    ],
    "portfolio": {"url": "https://github.com/janedoe"},
    "notify": {"candidate": True, "recruiters": ["lead@example.com"]},
    "language": "en",
}


# A webhook target (service/webhooks): http(s) only; where it resolves is checked on use.
# At most 320 characters: it is stored as the outbox row's recipient.
CallbackUrl = Annotated[HttpUrl, UrlConstraints(max_length=320, allowed_schemes=["http", "https"])]


class EvaluationCreate(_Strict):
    """An interview to score."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    candidate: Candidate
    position: PositionIn
    rubric: Rubric | None = None
    transcript: list[Turn] = Field(min_length=1, max_length=MAX_TRANSCRIPT_TURNS)
    portfolio: PortfolioIn | None = None
    notify: Notify | None = None
    language: Literal["en", "ko"] = "en"
    callback_url: CallbackUrl | None = Field(
        None, description="receives a signed POST when the evaluation finishes (async only)"
    )

    @property
    def effective_rubric(self) -> Rubric:
        """The request's rubric, or the default one."""
        return self.rubric or DEFAULT_RUBRIC


class Evidence(BaseModel):
    """A quote the LLM cited, and whether it is really in the transcript."""

    quote: str
    verified: bool


class CriterionResult(BaseModel):
    """The score of one criterion."""

    key: str
    score: int | float | None = Field(
        description="1 to 5 (a median when several samples); null when abstaining"
    )
    max_score: int = MAX_SCORE
    weight: float
    rationale: str
    evidence: list[Evidence]
    insufficient_evidence: bool = False
    evidence_unverified: bool = Field(
        False,
        description="scored, yet none of its quotes is found in the transcript (or it cites "
        "none): the score is unsupported and the evaluation needs review",
    )
    spread: int = Field(0, description="max minus min score across samples")


class PortfolioResult(BaseModel):
    """What the portfolio analyzer said, or why there is nothing."""

    status: Literal["ok", "unavailable", "rejected", "skipped"]
    score: int | None = None
    summary: str | None = None
    strengths: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    detail: str | None = None


class PositionRead(BaseModel):
    """The position as shown on an evaluation."""

    title: str
    level: str | None = None


class Usage(BaseModel):
    """LLM tokens used, summed over every attempt."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class NotificationRead(BaseModel):
    """A follow-up email and its delivery status."""

    to: str
    kind: Literal["candidate_follow_up", "recruiter_summary"]
    status: Literal["queued", "sending", "sent", "failed", "cancelled"] = Field(
        description="failed with a next_attempt_at is retried then; without one, given up"
    )
    attempts: int = 0
    next_attempt_at: datetime | None = None


EXAMPLE_EVALUATION: dict[str, Any] = {
    "id": "7f0c2a5e-9d0b-4a7e-8f55-0c1d2e3f4a5b",
    "status": "completed",
    "candidate": {"name": "Jane Doe", "email": "jane@example.com", "external_id": "ats-4411"},
    "position": {"title": "Backend Engineer", "level": "senior"},
    "overall_score": 69.7,
    "recommendation": "hire",
    "criteria": [
        {
            "key": "technical_depth",
            "score": 4,
            "max_score": 5,
            "weight": 2,
            "rationale": "Knows when asyncio does not help and what to use instead.",
            "evidence": [
                {"quote": "For CPU-bound work the event loop gives nothing", "verified": True}
            ],
            "insufficient_evidence": False,
            "evidence_unverified": False,
            "spread": 0,
        }
    ],
    "summary": "Solid async fundamentals; brief answers.",
    "portfolio": {
        "status": "ok",
        "score": 82,
        "summary": "Well-tested repositories.",
        "strengths": ["tests"],
        "risks": ["little documentation"],
        "detail": None,
    },
    "partial": False,
    "needs_review": False,
    "model_overall_score": 69.7,
    "model_recommendation": "hire",
    "review": None,
    "reviews": [],
    "model": "gpt-4o-mini",
    "prompt_version": "2026-12-05",
    "usage": {"prompt_tokens": 1234, "completion_tokens": 321},
    "cached": False,
    "notifications": [
        {
            "to": "jane@example.com",
            "kind": "candidate_follow_up",
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": None,
        }
    ],
    "timings_ms": {"llm": 2010, "portfolio": 1003, "total": 2016},
    "error": None,
    "created_at": "2026-11-23T10:00:00Z",
    "completed_at": "2026-11-23T10:00:02Z",
    "provenance": None,
}


class AttemptRead(BaseModel):
    """One LLM call of an evaluation, as stored: retries and repairs included."""

    model: str | None = None
    system_fingerprint: str | None = None
    seed: int | None = Field(None, description="the seed sent; honoured where the server can")
    response_format: Literal["json_schema", "json_object"] | None = Field(
        None,
        description="json_schema: strict structured output; json_object: JSON mode with the "
        "schema in the prompt, for a server that answered 400 to json_schema",
    )
    finish_reason: str | None = None
    prompt_tokens: int | None = Field(0, description="null when the server did not report it")
    completion_tokens: int | None = Field(0, description="null when the server did not report it")
    raw_output: str | None = None
    extracted_from: str | None = Field(
        None,
        description="where the JSON was found when it was not the whole content: tool_call, "
        "markdown_fence, surrounding_text",
    )
    normalized: list[str] = Field(
        default_factory=list,
        description="each normalization rule applied to the answer (docs/llm-replies.md)",
    )
    validation_error: str | None = Field(None, description="why the output was rejected")
    refusal: str | None = None
    error: str | None = Field(None, description="a failure that was retried")


class ProvenanceRead(BaseModel):
    """What an evaluation was scored with, enough to explain it or score it again."""

    prompt_version: str | None = None
    rubric_hash: str | None = None
    model: str | None = Field(None, description="the model requested")
    seed: int | None = None
    temperature: float | None = None
    response_format: Literal["json_schema", "json_object"] | None = Field(
        None, description="json_object when some answer was asked for in JSON mode"
    )
    system_fingerprints: list[str] = Field(default_factory=list)
    samples: list[list[AttemptRead]] = Field(
        default_factory=list, description="per sample, every attempt in order"
    )


class EvaluationRead(BaseModel):
    """A scored interview."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_EVALUATION]})

    id: str
    status: Status
    candidate: Candidate
    position: PositionRead
    overall_score: float | None = None
    recommendation: Recommendation | None = None
    criteria: list[CriterionResult] = Field(default_factory=list)
    summary: str | None = None
    portfolio: PortfolioResult | None = None
    partial: bool = False
    needs_review: bool = False
    model_overall_score: float | None = Field(
        None, description="the model's overall score; `overall_score` is the reviewed one"
    )
    model_recommendation: Recommendation | None = None
    review: ReviewRead | None = Field(None, description="the latest human review")
    reviews: list[ReviewRead] = Field(
        default_factory=list, description="every review, oldest first"
    )
    model: str | None = None
    prompt_version: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False
    notifications: list[NotificationRead] = Field(default_factory=list)
    timings_ms: dict[str, int] = Field(default_factory=dict)
    error: dict[str, object] | None = None
    created_at: datetime
    completed_at: datetime | None = None
    provenance: ProvenanceRead | None = Field(None, description="only with `?include=provenance`")


class EvaluationPage(BaseModel):
    """A page of evaluations, newest first."""

    items: list[EvaluationRead]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")
