"""Reading a chat completion whatever the server's dialect, and the normalization rules.

OpenAI-compatible servers differ in what they send back: the JSON may sit in a Markdown fence,
after a sentence, or in a tool call instead of `content`; `usage` may be missing or carry
numbers as strings; a proxy may answer 200 with an HTML page. Everything here is pure and
cheap: it runs once per LLM call, on the answer's bytes. docs/llm-replies.md is the table of
every shape and its outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.llm.prompts import CRITERION_FIELDS

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
# Lone surrogates (a JSON "\ud800" decodes to one) cannot be encoded as UTF-8, so no answer or
# mail could carry them; NUL is refused by PostgreSQL's text and jsonb types and by mail.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})


class NotACompletion(Exception):
    """A 2xx answer that is not a chat completion (a proxy's HTML page, an error object)."""


@dataclass(frozen=True)
class Reply:
    """What one chat completion says, read leniently."""

    text: str | None
    # Where the answer was found when not in `content`: "tool_call".
    source: str | None
    finish_reason: str | None
    refusal: str | None
    model: str | None
    system_fingerprint: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    # False when the server sent an empty choice list: there is no answer at all.
    has_choice: bool = True


def read_completion(body: bytes, content_type: str) -> Reply:
    """The reply in a 2xx body; NotACompletion when the body is not a chat completion."""
    try:
        data = json.loads(body)
    except ValueError:
        kind = content_type.split(";")[0].strip() or "an untyped"
        raise NotACompletion(f"a {kind} body that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        what = "an error object" if isinstance(data, dict) and "error" in data else "JSON"
        raise NotACompletion(f"{what} that is not a chat completion")
    usage = _object(data.get("usage"))
    common: dict[str, Any] = {
        "model": _text(data.get("model")),
        "system_fingerprint": _text(data.get("system_fingerprint")),
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "completion_tokens": _count(usage.get("completion_tokens")),
    }
    choices = data["choices"]
    if not choices:
        return Reply(
            text=None, source=None, finish_reason=None, refusal=None, has_choice=False, **common
        )
    choice = _object(choices[0])
    message = _object(choice.get("message"))
    text, source = _content(message.get("content")), None
    if not (text and text.strip()):
        arguments = _tool_arguments(message)
        if arguments is not None:
            text, source = arguments, "tool_call"
    refusal = message.get("refusal")
    return Reply(
        text=text,
        source=source,
        finish_reason=_text(choice.get("finish_reason")),
        refusal=_text(refusal) if isinstance(refusal, str) and refusal.strip() else None,
        **common,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else _UNSTORABLE.sub("", str(value))


def _count(value: Any) -> int | None:
    """A token count as the server sent it: an int, a whole float, or digits in a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _content(value: Any) -> str | None:
    if isinstance(value, list):  # content parts: [{"type": "text", "text": "..."}]
        parts = [p.get("text") for p in value if isinstance(p, dict)]
        value = "".join(p for p in parts if isinstance(p, str))
    return _text(value) if isinstance(value, str) else None


def _tool_arguments(message: dict[str, Any]) -> str | None:
    calls = message.get("tool_calls")
    candidates = (
        [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    )
    candidates.append(message.get("function_call"))  # the older single-call form
    for function in candidates:
        if isinstance(function, dict):
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments.strip():
                return _text(arguments)
            if isinstance(arguments, dict):
                return json.dumps(arguments)
    return None


def extract_json(text: str | None) -> tuple[Any, str | None]:
    """The JSON value in an answer, and where it was found when it was not the whole answer:
    "markdown_fence" or "surrounding_text". ValueError names what is wrong."""
    if text is None or not text.strip():
        raise ValueError("(root): the answer is empty")
    try:
        return json.loads(text), None
    except ValueError:
        pass
    stripped = _THINKING.sub("", text)
    for fenced in _FENCE.findall(stripped):
        try:
            return json.loads(fenced), "markdown_fence"
        except ValueError:
            continue
    # The first object that looks like an answer, else the first object at all.
    decoder, first = json.JSONDecoder(), None
    start = stripped.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(stripped, start)
        except ValueError:
            start = stripped.find("{", start + 1)
            continue
        if isinstance(value, dict) and "criteria" in value:
            return value, "surrounding_text"
        first = first if first is not None else value
        start = stripped.find("{", end)
    if first is not None:
        return first, "surrounding_text"
    raise ValueError("(root): the answer holds no JSON object")


class _Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quote: str


class CriterionOutput(BaseModel):
    """What the LLM says of one criterion (after normalize: abstaining means no score)."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str
    evidence: list[_Quote]
    insufficient_evidence: bool
    score: int | None = Field(ge=1, le=5)


class ScoringOutput(BaseModel):
    """One whole answer of the LLM; the criterion keys are checked against the rubric apart."""

    model_config = ConfigDict(extra="forbid")
    criteria: dict[str, CriterionOutput]
    summary: str


def normalize(value: Any, keys: Collection[str]) -> tuple[Any, list[str]]:
    """The answer with the normalization rules applied, and a note for each rule that changed
    something (stored with the attempt). What is not of the expected shape is left for the
    validation to name.

    1. Fields the schema does not have are ignored, at every level, unknown criteria too.
    2. A criterion abstains when it says so or gives no score, and an abstaining criterion
       has no score: a score beside `insufficient_evidence: true` is discarded, a null score
       makes `insufficient_evidence` true.
    3. NUL characters and lone surrogates in text are dropped: they cannot be stored or sent.
    """
    notes: list[str] = []
    if not isinstance(value, dict):
        return value, notes
    answer = _known(value, ("criteria", "summary"), "", notes)
    criteria = answer.get("criteria")
    if isinstance(criteria, dict):
        answer["criteria"] = {
            key: _criterion(item, f"criteria.{key}", notes) if isinstance(item, dict) else item
            for key, item in _known(criteria, keys, "criteria.", notes).items()
        }
    if isinstance(answer.get("summary"), str):
        answer["summary"] = _storable(answer["summary"], "summary", notes)
    return answer, notes


def _known(
    value: dict[str, Any], names: Collection[str], path: str, notes: list[str]
) -> dict[str, Any]:
    unknown = [name for name in value if name not in names]
    if not unknown:
        return dict(value)
    notes.append(f"ignored: {', '.join(path + name for name in unknown)}")
    return {name: item for name, item in value.items() if name in names}


def _criterion(item: dict[str, Any], path: str, notes: list[str]) -> dict[str, Any]:
    criterion = _known(item, CRITERION_FIELDS, f"{path}.", notes)
    score = criterion.get("score")
    if _flag(criterion.get("insufficient_evidence")) is True:
        if score is not None:
            notes.append(
                f"{path}.score: {json.dumps(score)} discarded, insufficient_evidence is true"
            )
        criterion["score"] = None
    elif "score" in criterion and score is None:
        criterion["insufficient_evidence"] = True
        notes.append(f"{path}.insufficient_evidence: true, the score is null")
    if isinstance(criterion.get("reasoning"), str):
        criterion["reasoning"] = _storable(criterion["reasoning"], f"{path}.reasoning", notes)
    evidence = criterion.get("evidence")
    if isinstance(evidence, list):
        criterion["evidence"] = [
            _quote(e, f"{path}.evidence[{i}]", notes) if isinstance(e, dict) else e
            for i, e in enumerate(evidence)
        ]
    return criterion


def _quote(item: dict[str, Any], path: str, notes: list[str]) -> dict[str, Any]:
    quote = _known(item, ("quote",), f"{path}.", notes)
    if isinstance(quote.get("quote"), str):
        quote["quote"] = _storable(quote["quote"], f"{path}.quote", notes)
    return quote


def _flag(value: Any) -> bool | None:
    """A boolean as the server sent it (true, "true", "false", 0, ...); None when unreadable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        text = str(value).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def _storable(text: str, path: str, notes: list[str]) -> str:
    if not _UNSTORABLE.search(text):
        return text
    notes.append(f"{path}: NUL characters and lone surrogates dropped")
    return _UNSTORABLE.sub("", text)
