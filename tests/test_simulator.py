"""Tests of the upstream simulator, driven through the official openai SDK and plain HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from service.devtools.simulator import (
    SimulatorConfig,
    TranscriptContext,
    generate_instance,
    start_simulator,
)
from service.llm.prompts import with_schema_in_prompt

FAST = SimulatorConfig(llm_latency_s=0.0, analyzer_latency_s=0.0)


def _criterion() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["reasoning", "evidence", "insufficient_evidence", "score"],
        "properties": {
            "reasoning": {"type": "string"},
            "evidence": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["quote"],
                    "properties": {"quote": {"type": "string"}},
                },
            },
            "insufficient_evidence": {"type": "boolean"},
            "score": {"type": ["integer", "null"], "enum": [1, 2, 3, 4, 5, None]},
        },
    }


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["criteria", "summary"],
    "properties": {
        "criteria": {
            "type": "object",
            "additionalProperties": False,
            "required": ["technical_depth", "communication"],
            "properties": {"technical_depth": _criterion(), "communication": _criterion()},
        },
        "summary": {"type": "string"},
    },
}
RESPONSE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "interview_scores", "strict": True, "schema": SCHEMA},
}
LONG_ANSWER = (
    "I designed the ingestion pipeline around an append-only log so that replays were cheap,\n"
    "and  we partitioned by tenant to keep hot keys isolated; latency dropped from 900ms to "
    "120ms after we moved the enrichment step off the request path."
)
TURNS = [
    {"question": "Describe a system you built <briefly>.", "answer": LONG_ANSWER},
    {"question": "How do you test it?", "answer": "Property tests plus a replay harness."},
]


def _validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> None:
    """Tiny JSON Schema validator for the subset the simulator supports."""
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    if "anyOf" in schema:
        errors = []
        for branch in schema["anyOf"]:
            try:
                _validate(value, branch, root, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: no anyOf branch matched: {errors}")
    if "enum" in schema:
        assert value in schema["enum"], path
        assert value is None or not isinstance(value, bool), path
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if types:
        assert any(checks[t](value) for t in types), f"{path}: {value!r} is not {types}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        assert set(schema.get("required", [])) <= value.keys(), f"{path}: missing required"
        if schema.get("additionalProperties") is False:
            assert value.keys() <= props.keys(), f"{path}: extra keys"
        for key, sub in props.items():
            if key in value:
                _validate(value[key], sub, root, f"{path}.{key}")
    elif isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), path
        assert len(value) <= schema.get("maxItems", len(value)), path
        for i, item in enumerate(value):
            _validate(item, schema.get("items", {}), root, f"{path}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        assert value >= schema.get("minimum", value), path
        assert value <= schema.get("maximum", value), path
        assert value > schema.get("exclusiveMinimum", value - 1), path
        assert value < schema.get("exclusiveMaximum", value + 1), path


def _messages(turns: list[dict[str, str]] | None) -> list[ChatCompletionMessageParam]:
    # The service escapes < and > inside the block, so the tags cannot be forged by answers.
    block = json.dumps(turns).replace("<", "\\u003c").replace(">", "\\u003e")
    return [
        {"role": "system", "content": "You are an interview scorer."},
        {
            "role": "user",
            "content": f"Score this interview.\n<transcript_json>\n{block}\n</transcript_json>",
        },
    ]


@asynccontextmanager
async def _simulator(config: SimulatorConfig = FAST) -> AsyncIterator[int]:
    runner, port = await start_simulator(config)
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _llm(port: int) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        api_key="x",
        base_url=f"http://127.0.0.1:{port}/v1",
        # The SDK accepts a legacy httpx client at run time but types http_client as httpx2's.
        http_client=httpx.AsyncClient(),  # type: ignore[arg-type]
        max_retries=0,
    )
    try:
        yield client
    finally:
        await client.close()


async def _score(client: openai.AsyncOpenAI, turns: list[dict[str, str]]) -> dict[str, Any]:
    completion = await client.chat.completions.create(
        model="m", messages=_messages(turns), temperature=0, response_format=RESPONSE_FORMAT
    )
    content = completion.choices[0].message.content
    assert content is not None
    result: dict[str, Any] = json.loads(content)
    return result


@pytest.mark.asyncio
async def test_sdk_completion_validates_and_quotes_are_verbatim() -> None:
    async with _simulator() as port, _llm(port) as client:
        completion = await client.chat.completions.create(
            model="m", messages=_messages(TURNS), temperature=0, response_format=RESPONSE_FORMAT
        )
    assert completion.model == "m"
    assert completion.id.startswith("chatcmpl-sim-")
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    content = completion.choices[0].message.content
    assert content is not None
    result = json.loads(content)
    _validate(result, SCHEMA, SCHEMA)
    answers = [t["answer"] for t in TURNS]
    for criterion in result["criteria"].values():
        assert criterion["insufficient_evidence"] is False
        assert criterion["score"] in {1, 2, 3, 4, 5}
        assert 1 <= len(criterion["evidence"]) <= 2
        for item in criterion["evidence"]:
            assert item["quote"]
            assert any(item["quote"] in a for a in answers)


@pytest.mark.asyncio
async def test_same_request_gives_same_content() -> None:
    async with _simulator() as port, _llm(port) as client:
        first, second = await _score(client, TURNS), await _score(client, TURNS)
        other = await _score(client, [{"question": "Q", "answer": "A different answer."}])
    assert first == second
    assert other != first


@pytest.mark.asyncio
async def test_empty_answers_give_insufficient_evidence_and_null_score() -> None:
    turns = [{"question": "Q1", "answer": ""}, {"question": "Q2", "answer": "  \n "}]
    async with _simulator() as port, _llm(port) as client:
        result = await _score(client, turns)
    _validate(result, SCHEMA, SCHEMA)
    for criterion in result["criteria"].values():
        assert criterion == criterion | {"insufficient_evidence": True, "score": None}
        assert criterion["evidence"] == []


@pytest.mark.asyncio
async def test_missing_transcript_counts_as_empty() -> None:
    async with _simulator() as port, _llm(port) as client:
        completion = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "no transcript here"}],
            response_format=RESPONSE_FORMAT,
        )
    result = json.loads(completion.choices[0].message.content or "")
    assert all(c["score"] is None for c in result["criteria"].values())


@pytest.mark.asyncio
async def test_scores_follow_answer_length() -> None:
    long_turns = [{"question": f"Q{i}", "answer": LONG_ANSWER} for i in range(3)]
    short_turns = [{"question": f"Q{i}", "answer": f"Short answer {i}."} for i in range(3)]
    async with _simulator() as port, _llm(port) as client:
        long_result, short_result = (
            await _score(client, long_turns),
            await _score(client, short_turns),
        )
    assert all(c["score"] >= 3 for c in long_result["criteria"].values())
    assert all(c["score"] <= 3 for c in short_result["criteria"].values())


@pytest.mark.asyncio
async def test_plain_text_without_schema_and_alias_path() -> None:
    async with _simulator() as port, httpx.AsyncClient() as http:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        }
        response = await http.post(f"http://127.0.0.1:{port}/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "simulated"


@pytest.mark.asyncio
async def test_invalid_json_gives_openai_style_400() -> None:
    async with _simulator() as port, httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_failure_rate_gives_500() -> None:
    config = SimulatorConfig(llm_latency_s=0, failure_rate=1.0)
    async with _simulator(config) as port, _llm(port) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await _score(client, TURNS)
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "simulated failure",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }


@pytest.mark.asyncio
async def test_rate_limit_rate_gives_429_with_retry_after() -> None:
    config = SimulatorConfig(llm_latency_s=0, rate_limit_rate=1.0)
    async with _simulator(config) as port, _llm(port) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await _score(client, TURNS)
    assert caught.value.response.headers["Retry-After"] == "1"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "rate_limit_exceeded"


@pytest.mark.asyncio
async def test_llm_latency_is_honoured() -> None:
    async with _simulator(SimulatorConfig(llm_latency_s=0.2)) as port, _llm(port) as client:
        started = time.perf_counter()
        await _score(client, TURNS)
        assert time.perf_counter() - started >= 0.2


@pytest.mark.asyncio
async def test_many_concurrent_requests_all_succeed() -> None:
    config = SimulatorConfig(llm_latency_s=0.2, analyzer_latency_s=0.0)
    body = {"model": "m", "messages": _messages(TURNS), "response_format": RESPONSE_FORMAT}
    async with _simulator(config) as port:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def call() -> int:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(*(call() for _ in range(300)))
            async with session.get(f"{url}/stats") as response:
                stats = await response.json()
    assert statuses == [200] * 300
    assert stats["llm_calls"] == 300


ANALYZER = SimulatorConfig(llm_latency_s=0, analyzer_latency_s=0, analyzer_token="secret")
AUTH = {"Authorization": "Bearer secret"}


@pytest.mark.asyncio
async def test_analyzer_returns_deterministic_analysis() -> None:
    request = {"url": "https://github.com/alice", "candidate_name": "Alice"}
    async with _simulator(ANALYZER) as port, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}"
        first = await http.post(f"{url}/analyze", json=request, headers=AUTH)
        second = await http.post(f"{url}/analyze", json=request, headers=AUTH)
        stats = (await http.get(f"{url}/stats")).json()
        health = (await http.get(f"{url}/healthz")).json()
    assert first.status_code == 200
    analysis = first.json()
    assert analysis == second.json()
    assert set(analysis) == {"score", "summary", "strengths", "risks", "languages"}
    assert isinstance(analysis["score"], int)
    assert 40 <= analysis["score"] <= 95
    assert 0 < len(analysis["summary"]) <= 4000
    assert "Alice" in analysis["summary"]
    assert len(analysis["strengths"]) == 2
    assert len(analysis["risks"]) == 1
    assert "Python" in analysis["languages"]
    assert len(analysis["languages"]) <= 50
    assert all(isinstance(s, str) for k in ("strengths", "risks", "languages") for s in analysis[k])
    assert stats == {"llm_calls": 0, "llm_errors": 0, "analyzer_calls": 2, "analyzer_errors": 0}
    assert health == {"status": "ok"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("headers", "request_body", "status"),
    [
        ({}, {"url": "https://github.com/alice"}, 401),
        ({"Authorization": "Bearer wrong"}, {"url": "https://github.com/alice"}, 401),
        (AUTH, {"url": "ftp://github.com/alice"}, 400),
        (AUTH, {"url": "https://" + "a" * 2048}, 400),
        (AUTH, {"name": "no url"}, 400),
        (AUTH, {"url": "https://github.com/404/alice"}, 404),
        (AUTH, {"url": "https://portfolio.invalid/alice"}, 404),
    ],
)
async def test_analyzer_errors(
    headers: dict[str, str], request_body: dict[str, Any], status: int
) -> None:
    async with _simulator(ANALYZER) as port, httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/analyze", json=request_body, headers=headers
        )
    assert response.status_code == status


@pytest.mark.asyncio
async def test_analyzer_without_token_accepts_any_and_fails_with_503() -> None:
    config = SimulatorConfig(analyzer_latency_s=0, failure_rate=1.0)
    async with _simulator(config) as port, httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/analyze", json={"url": "https://github.com/alice"}
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def test_generate_instance_handles_schema_subset() -> None:
    schema: dict[str, Any] = {
        "$defs": {"tag": {"type": "string", "enum": ["a", "b"]}},
        "definitions": {"level": {"type": "integer", "minimum": 7, "maximum": 9}},
        "type": "object",
        "additionalProperties": False,
        "required": ["tag", "level", "ratio", "choice", "maybe", "many", "nothing", "flag"],
        "properties": {
            "tag": {"$ref": "#/$defs/tag"},
            "level": {"$ref": "#/definitions/level"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": -3}]},
            "maybe": {"type": ["null", "string"]},
            "many": {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 4},
            "nothing": {"type": "null"},
            "flag": {"type": "boolean"},
        },
    }
    for seed in range(20):
        value = generate_instance(schema, rng=random.Random(seed))
        _validate(value, schema, schema)
        assert value["maybe"] == "simulated"
        assert value["choice"] is not None
    assert generate_instance(schema, rng=random.Random(1)) == generate_instance(
        schema, rng=random.Random(1)
    )


def test_quote_is_verbatim_across_irregular_whitespace() -> None:
    context = TranscriptContext(answers=(LONG_ANSWER, "", "Two words."))
    item_schema = {"type": "object", "properties": {"quote": {"type": "string"}}}
    schema = {"type": "object", "properties": {"evidence": {"type": "array", "items": item_schema}}}
    for seed in range(50):
        value = generate_instance(schema, rng=random.Random(seed), context=context)
        for item in value["evidence"]:
            quote = item["quote"]
            assert quote in (LONG_ANSWER, "Two words.") or (
                quote in LONG_ANSWER and 6 <= len(quote.split()) <= 12
            )


@pytest.mark.asyncio
async def test_without_json_schema_it_refuses_the_schema_and_answers_json_mode() -> None:
    """Like servers without structured output: 400 to json_schema; in JSON mode an instance of
    the schema the service writes into the system message."""
    config = SimulatorConfig(llm_latency_s=0, analyzer_latency_s=0, json_schema=False)
    async with _simulator(config) as port, _llm(port) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await _score(client, TURNS)
        messages: Any = with_schema_in_prompt(_messages(TURNS), SCHEMA)  # type: ignore[arg-type]
        completion = await client.chat.completions.create(
            model="m", messages=messages, temperature=0, response_format={"type": "json_object"}
        )

    assert "response_format" in refused.value.message
    content = completion.choices[0].message.content
    assert content is not None
    _validate(json.loads(content), SCHEMA, SCHEMA)


async def test_control_changes_failure_rates_and_latency_while_running() -> None:
    config = SimulatorConfig(llm_latency_s=0, analyzer_latency_s=0)
    async with _simulator(config) as port, _llm(port) as client, httpx.AsyncClient() as http:
        control = f"http://127.0.0.1:{port}/control"
        assert (await _score(client, TURNS))["criteria"]

        failing = await http.post(control, json={"failure_rate": 1.0})
        assert failing.status_code == 200
        assert failing.json()["failure_rate"] == 1.0
        with pytest.raises(openai.InternalServerError):
            await _score(client, TURNS)

        await http.post(control, json={"failure_rate": 0, "rate_limit_rate": 1.0})
        with pytest.raises(openai.RateLimitError):
            await _score(client, TURNS)

        await http.post(control, json={"rate_limit_rate": 0})
        assert (await _score(client, TURNS))["criteria"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "knobs", [{"nonsense": 1}, {"failure_rate": 2}, {"llm_latency_s": -1}, {"jitter_s": "x"}]
)
async def test_control_refuses_what_is_not_a_knob(knobs: dict[str, Any]) -> None:
    async with _simulator() as port, httpx.AsyncClient() as http:
        response = await http.post(f"http://127.0.0.1:{port}/control", json=knobs)
    assert response.status_code == 400
