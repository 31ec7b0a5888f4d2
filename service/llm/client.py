"""Structured scoring calls to any OpenAI-compatible server, with retries inside a deadline.

The answers are read leniently and normalized by documented rules (service/llm/replies.py,
docs/llm-replies.md): whatever conforms to the schema sent is accepted. A server that answers
400 to `response_format: json_schema` is asked again once in JSON mode with the schema in the
prompt, and this process keeps to JSON mode from then on (shown in /readyz and provenance).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from service.config import Settings
from service.errors import (
    LLMInvalidOutput,
    LLMOutputTruncated,
    LLMRefused,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
)
from service.llm.prompts import repair_message, response_schema, with_schema_in_prompt
from service.llm.replies import (
    CriterionOutput,
    NotACompletion,
    Reply,
    ScoringOutput,
    extract_json,
    normalize,
    read_completion,
)
from service.metrics import LLM_TOKENS, UPSTREAM_INVALID, track_upstream

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
# Sent with every call and stored with it: OpenAI and vLLM honour a seed (best effort, the
# system fingerprint says which backend answered); servers that do not simply ignore it.
SEED = 0
TEMPERATURE = 0.0
SCHEMA_NAME = "interview_scores"
# The waits between attempts; tests replace it to keep the delays' values but not their time.
_sleep = asyncio.sleep

ResponseFormat = Literal["json_schema", "json_object"]
_TRANSIENT = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,
    NotACompletion,
)


@dataclass
class LLMOutput:
    """One validated answer of the LLM, with the record of every attempt that led to it."""

    criteria: dict[str, CriterionOutput]
    summary: str
    prompt_tokens: int
    completion_tokens: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # How the answer was asked for: under the schema, or in JSON mode with it in the prompt.
    response_format: ResponseFormat = "json_schema"


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 or 503 asks for: retry-after-ms, or Retry-After in seconds or as a date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        seconds: float | None
        try:
            seconds = float(value) * scale
        except ValueError:
            seconds = _seconds_until(value) if name == "retry-after" else None
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


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
        self._response_format: ResponseFormat = "json_schema"
        self._fallback_reason: str | None = None

    @property
    def max_concurrency(self) -> int:
        """The cap on calls in flight in this process; background work sizes itself by it."""
        return self._max_concurrency

    @property
    def limit(self) -> asyncio.Semaphore:
        """The semaphore every call of this process holds while in flight."""
        return self._limit

    def structured_output(self) -> dict[str, str | None]:
        """How this process asks for structured output, and why when not under the schema."""
        return {"response_format": self._response_format, "fallback_reason": self._fallback_reason}

    async def score(
        self, *, messages: list[dict[str, str]], criterion_keys: list[str], deadline: float
    ) -> LLMOutput:
        """One scoring: a valid answer, or an LLM error, before `deadline` (monotonic)."""
        schema = response_schema(criterion_keys)
        conversation = list(messages)
        attempts: list[dict[str, Any]] = []
        mode = self._response_format
        refused_schema: str | None = None  # the status of a 400 to json_schema, if any
        transient_failures = 0
        repaired = False
        while True:
            try:
                reply, record = await self._call(conversation, schema, mode, deadline)
            except _TRANSIENT as exc:
                transient_failures += 1
                attempts.append({"error": _transient_error(exc), "response_format": mode})
                await self._back_off(exc, failures=transient_failures, deadline=deadline)
                continue
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if mode == "json_schema" and _about_the_schema(exc):
                    attempts.append({"error": type(exc).__name__, "response_format": mode})
                    refused_schema = f"status {exc.status_code}"
                    # Once: what JSON mode is refused for is not the schema, and final.
                    mode = "json_object"
                    continue
                raise LLMRejected(
                    f"The LLM rejected the request with status {exc.status_code}."
                ) from None
            except openai.APIStatusError as exc:
                raise LLMRejected(
                    f"The LLM rejected the request with status {exc.status_code}."
                ) from None
            attempts.append(record)
            if refused_schema is not None:
                self._fall_back(reason=f"the server answered {refused_schema} to json_schema")
            try:
                answer = _answer(reply, criterion_keys, record)
            except ValueError as exc:
                error = str(exc)
            else:
                return LLMOutput(
                    criteria=answer.criteria,
                    summary=answer.summary,
                    prompt_tokens=sum(a.get("prompt_tokens") or 0 for a in attempts),
                    completion_tokens=sum(a.get("completion_tokens") or 0 for a in attempts),
                    attempts=attempts,
                    response_format=mode,
                )
            record["validation_error"] = error
            UPSTREAM_INVALID.labels("llm").inc()
            _give_up_unless_repairable(reply, error=error, repaired=repaired)
            repaired = True
            if reply.text:  # else nothing to repair: the same question again
                conversation += [
                    {"role": "assistant", "content": reply.text},
                    repair_message(error),
                ]

    async def _back_off(self, exc: Exception, *, failures: int, deadline: float) -> None:
        """Wait before the next attempt after a transient failure, or give up: past the
        retries, or when the wait asked for (Retry-After) ends past the deadline."""
        if isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota":
            # A 429 that waiting does not cure.
            raise LLMRejected(
                "The LLM rejected the request with status 429 (insufficient_quota)."
            ) from None
        retry_after = (
            _retry_after_s(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
        )
        delay = (
            retry_after
            if retry_after is not None
            else random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**failures))
        )
        if failures > self._max_retries or delay >= deadline - time.monotonic():
            logger.warning("llm unavailable", extra={"attempts": failures})
            raise LLMUnavailable(
                f"The LLM is unavailable ({_transient_error(exc)}) after {failures} attempts.",
                retry_after_s=round(retry_after or BACKOFF_CAP_S),
            ) from None
        await _sleep(delay)

    def _fall_back(self, *, reason: str) -> None:
        if self._response_format == "json_object":
            return
        self._response_format = "json_object"
        self._fallback_reason = reason
        logger.warning(
            "llm structured output unsupported: JSON mode from now on",
            extra={"reason": self._fallback_reason},
        )

    async def _call(
        self,
        conversation: list[dict[str, str]],
        schema: dict[str, Any],
        mode: ResponseFormat,
        deadline: float,
    ) -> tuple[Reply, dict[str, Any]]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMTimeout("The LLM did not answer within the evaluation's deadline.")
        timeout = min(self._call_timeout_s, remaining)
        if mode == "json_schema":
            messages = conversation
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema},
            }
        else:
            messages = with_schema_in_prompt(conversation, schema)
            response_format = {"type": "json_object"}
        try:
            # The wait for a slot counts against the deadline too.
            async with asyncio.timeout(timeout), self._limit, track_upstream("llm"):
                # The SDK's own request, as its `post` makes it (its client, auth, timeouts and
                # error types), with the body sent as it is: `chat.completions.create` first
                # walks every message and the schema through its TypedDict transforms, which
                # iterate each string character by character as a possible list of content
                # parts: 0.4 ms of CPU a call, a sixth of a request's (bench/, `make bench`).
                raw = await self._client.post(
                    "/chat/completions",
                    cast_to=httpx.Response,
                    body={
                        "model": self._model,
                        "messages": messages,
                        "temperature": TEMPERATURE,
                        "seed": SEED,
                        "response_format": response_format,
                    },
                )
                # The body is read here, not by the SDK: servers differ in what they send.
                reply = read_completion(raw.content, raw.headers.get("content-type", ""))
        except (TimeoutError, openai.APITimeoutError):
            raise LLMTimeout(f"The LLM did not answer within {timeout:.0f} s.") from None
        if reply.prompt_tokens is not None:
            LLM_TOKENS.labels("prompt").inc(reply.prompt_tokens)
        if reply.completion_tokens is not None:
            LLM_TOKENS.labels("completion").inc(reply.completion_tokens)
        record: dict[str, Any] = {
            "model": reply.model,
            "system_fingerprint": reply.system_fingerprint,
            "seed": SEED,
            "response_format": mode,
            "finish_reason": reply.finish_reason,
            # None when the server did not say: unknown, not free.
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "raw_output": reply.text,
        }
        if reply.refusal is not None:
            record["refusal"] = reply.refusal
        return reply, record

    async def aclose(self) -> None:
        """Nothing to close: the shared HTTP client belongs to the lifespan."""


def _give_up_unless_repairable(reply: Reply, *, error: str, repaired: bool) -> None:
    """Raise the final error of an answer that failed validation, unless asking once more
    with the error (a repair) can help."""
    if reply.refusal is not None or reply.finish_reason == "content_filter":
        raise LLMRefused(
            reply.refusal[:500]
            if reply.refusal
            else "The server's content filter stopped the answer."
        )
    if reply.finish_reason == "length":
        raise LLMOutputTruncated(
            "The LLM's answer was cut off at its length limit (finish_reason length) before it "
            "was complete: raise the server's output token limit, or score fewer criteria."
        )
    if repaired:
        raise LLMInvalidOutput(f"The LLM's output failed validation twice: {error}")


def _answer(reply: Reply, keys: list[str], record: dict[str, Any]) -> ScoringOutput:
    """The validated answer in a reply; what was done to get it is noted in `record`."""
    if not reply.has_choice:
        raise ValueError("(root): the server answered with an empty choice list")
    value, found_in = extract_json(reply.text)
    where = [w for w in (reply.source, found_in) if w]
    if where:
        record["extracted_from"] = ", ".join(where)
    value, notes = normalize(value, keys)
    if notes:
        record["normalized"] = notes
    criteria = value.get("criteria") if isinstance(value, dict) else None
    missing = [key for key in keys if isinstance(criteria, dict) and key not in criteria]
    errors = [f"criteria.{key}: Field required" for key in missing]
    try:
        answer = ScoringOutput.model_validate(value)
    except ValidationError as exc:
        errors.append(_describe(exc))
    if errors:
        raise ValueError("; ".join(errors))
    return answer


# What a server's 400 or 422 says when it is json_schema it cannot do: "This response_format
# type is unavailable now", "`json_schema` is not supported", "Invalid JSON schema", a
# validation error located at body.response_format. Other 400s (a bad model, too long a prompt)
# are not worth a second call.
_SCHEMA_WORDS = ("response_format", "schema", "structured output")


def _about_the_schema(exc: openai.APIStatusError) -> bool:
    said = f"{exc.message} {json.dumps(exc.body, default=str)}".lower()
    return any(word in said for word in _SCHEMA_WORDS)


def _transient_error(exc: Exception) -> str:
    if isinstance(exc, NotACompletion):
        return f"NotACompletion: status 200 with {exc}"
    return type(exc).__name__


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts) if parts else json.dumps(str(exc))
