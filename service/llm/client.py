"""Structured scoring calls to any OpenAI-compatible server, with retries inside a deadline."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from service.config import Settings
from service.errors import LLMInvalidOutput, LLMRejected, LLMTimeout, LLMUnavailable
from service.llm.prompts import repair_message, response_schema
from service.metrics import LLM_TOKENS, UPSTREAM_INVALID, track_upstream

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
# Sent with every call and stored with it: OpenAI and vLLM honour a seed (best effort, the
# system fingerprint says which backend answered); servers that do not simply ignore it.
SEED = 0
TEMPERATURE = 0.0


class _Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quote: str


class CriterionOutput(BaseModel):
    """What the LLM says of one criterion."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str
    evidence: list[_Quote]
    insufficient_evidence: bool
    score: int | None = Field(ge=1, le=5)

    @model_validator(mode="after")
    def _abstain_or_score(self) -> CriterionOutput:
        if self.insufficient_evidence and self.score is not None:
            raise ValueError("score must be null when insufficient_evidence is true")
        if not self.insufficient_evidence and self.score is None:
            raise ValueError("score is required unless insufficient_evidence is true")
        return self


@dataclass
class LLMOutput:
    """One validated answer of the LLM, with the record of every attempt that led to it."""

    criteria: dict[str, CriterionOutput]
    summary: str
    prompt_tokens: int
    completion_tokens: int
    attempts: list[dict[str, Any]] = field(default_factory=list)


# Building a pydantic model costs milliseconds: one per rubric shape, reused, and bounded since
# criterion keys come from requests.
@functools.lru_cache(maxsize=128)
def _output_model(keys: tuple[str, ...]) -> type[BaseModel]:
    criteria = create_model(  # type: ignore[call-overload]
        "Criteria",
        __config__=ConfigDict(extra="forbid"),
        **dict.fromkeys(keys, (CriterionOutput, ...)),
    )
    return create_model(
        "ScoringOutput",
        __config__=ConfigDict(extra="forbid"),
        criteria=(criteria, ...),
        summary=(str, ...),
    )


def _retry_after_s(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LLMClient:
    """Scores through the chat completions API; one instance per process, made in lifespan."""

    def __init__(self, *, settings: Settings, http_client: httpx.AsyncClient) -> None:
        api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "simulated"
        # The SDK's own defaults (600 s, 2 retries) are not ours: retries happen here, where
        # they can respect the evaluation's deadline.
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=settings.effective_llm_base_url,
            # openai 3.x types this as an httpx2 client; an httpx client works at run time
            # and lets respx see the calls (respx does not intercept httpx2).
            http_client=http_client,  # type: ignore[arg-type]
            max_retries=0,
            timeout=settings.llm_timeout_s,
        )
        self._model = settings.llm_model
        self._call_timeout_s = settings.llm_timeout_s
        self._max_retries = settings.llm_max_retries
        self._limit = asyncio.Semaphore(settings.llm_max_concurrency)
        self._max_concurrency = settings.llm_max_concurrency

    @property
    def max_concurrency(self) -> int:
        """The cap on calls in flight in this process; background work sizes itself by it."""
        return self._max_concurrency

    @property
    def limit(self) -> asyncio.Semaphore:
        """The semaphore every call of this process holds while in flight."""
        return self._limit

    async def score(
        self, *, messages: list[dict[str, str]], criterion_keys: list[str], deadline: float
    ) -> LLMOutput:
        """One scoring: a valid answer, or an LLM error, before `deadline` (monotonic)."""
        schema = response_schema(criterion_keys)
        model = _output_model(tuple(criterion_keys))
        conversation = list(messages)
        attempts: list[dict[str, Any]] = []
        transient_failures = 0
        repaired = False
        while True:
            try:
                content, record = await self._call(conversation, schema, deadline)
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
            ) as exc:
                transient_failures += 1
                attempts.append({"error": type(exc).__name__})
                retry_after = (
                    _retry_after_s(exc) if isinstance(exc, openai.APIStatusError) else None
                )
                delay = (
                    retry_after
                    if retry_after is not None
                    else random.uniform(
                        0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**transient_failures)
                    )
                )
                remaining = deadline - time.monotonic()
                if transient_failures > self._max_retries or delay >= remaining:
                    logger.warning("llm unavailable", extra={"attempts": len(attempts)})
                    raise LLMUnavailable(
                        f"The LLM is unavailable ({type(exc).__name__}) after "
                        f"{transient_failures} attempts.",
                        retry_after_s=int(retry_after or BACKOFF_CAP_S),
                    ) from None
                await asyncio.sleep(delay)
                continue
            except openai.APIStatusError as exc:
                raise LLMRejected(
                    f"The LLM rejected the request with status {exc.status_code}."
                ) from None
            attempts.append(record)
            try:
                parsed = model.model_validate_json(content)
            except ValidationError as exc:
                error = _describe(exc)
                record["validation_error"] = error
                UPSTREAM_INVALID.labels("llm").inc()
                if repaired:
                    raise LLMInvalidOutput(
                        f"The LLM's output failed validation twice: {error}"
                    ) from None
                repaired = True
                conversation += [{"role": "assistant", "content": content}, repair_message(error)]
                continue
            criteria = parsed.criteria  # type: ignore[attr-defined]
            return LLMOutput(
                criteria={key: getattr(criteria, key) for key in criterion_keys},
                summary=parsed.summary,  # type: ignore[attr-defined]
                prompt_tokens=sum(a.get("prompt_tokens", 0) for a in attempts),
                completion_tokens=sum(a.get("completion_tokens", 0) for a in attempts),
                attempts=attempts,
            )

    async def _call(
        self, conversation: list[dict[str, str]], schema: dict[str, Any], deadline: float
    ) -> tuple[str, dict[str, Any]]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMTimeout("The LLM did not answer within the evaluation's deadline.")
        timeout = min(self._call_timeout_s, remaining)
        try:
            # The wait for a slot counts against the deadline too.
            async with asyncio.timeout(timeout), self._limit, track_upstream("llm"):
                response = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self._model,
                    messages=conversation,
                    temperature=TEMPERATURE,
                    seed=SEED,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": "interview_scores",
                            "strict": True,
                            "schema": schema,
                        },
                    },
                )
        except (TimeoutError, openai.APITimeoutError):
            raise LLMTimeout(f"The LLM did not answer within {timeout:.0f} s.") from None
        choice = response.choices[0] if response.choices else None
        content = choice.message.content if choice and choice.message else None
        if response.usage:
            LLM_TOKENS.labels("prompt").inc(response.usage.prompt_tokens)
            LLM_TOKENS.labels("completion").inc(response.usage.completion_tokens)
        record: dict[str, Any] = {
            "model": response.model,
            "system_fingerprint": response.system_fingerprint,
            "seed": SEED,
            "finish_reason": choice.finish_reason if choice else None,
            "prompt_tokens": response.usage.prompt_tokens if response.usage else 0,
            "completion_tokens": response.usage.completion_tokens if response.usage else 0,
            "raw_output": content,
        }
        if choice and choice.message and choice.message.refusal:
            record["refusal"] = choice.message.refusal
        return content or "", record

    async def aclose(self) -> None:
        """Nothing to close: the shared HTTP client belongs to the lifespan."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts) if parts else json.dumps(str(exc))
