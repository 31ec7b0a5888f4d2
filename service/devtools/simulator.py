"""Deterministic simulator of both upstreams: an OpenAI-compatible LLM and the portfolio analyzer.

Used for demos, load tests and end-to-end tests. It is built to stay cheap under 1,000+
concurrent requests: plain aiohttp, no access log, no per-request logging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import math
import random
import re
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

_TRANSCRIPT_RE = re.compile(r"<transcript_json>(.*?)</transcript_json>", re.DOTALL)
# Where JSON mode finds the schema: after these words in a system message, as the service puts
# it there (service/llm/prompts.py, with_schema_in_prompt).
_SCHEMA_IN_PROMPT = "JSON schema:"
_WORD_RE = re.compile(r"\S+")
_MAX_DEPTH = 12  # recursive $ref schemas stop growing past this depth
_SENTENCE_NAMES = frozenset({"reasoning", "rationale", "summary"})
_LANGUAGES = ("TypeScript", "Go", "Rust", "SQL", "Java", "C++")
_STRENGTHS = ("Clear project structure", "Automated tests", "Good docs", "Consistent style")
_FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "uri": "https://example.com"}
_RISKS = ("Few recent commits", "Limited test coverage", "Sparse documentation")


@dataclass(frozen=True)
class SimulatorConfig:
    """Behaviour knobs of the simulator; all rates are shares in 0..1."""

    llm_latency_s: float = 1.0
    analyzer_latency_s: float = 0.5
    jitter_s: float = 0.0
    failure_rate: float = 0.0
    rate_limit_rate: float = 0.0
    analyzer_token: str | None = None
    # False: answer 400 to `response_format: json_schema`, as servers without structured output
    # do; JSON mode (`json_object`) then answers from the schema written in the system message.
    json_schema: bool = True


@dataclass(frozen=True)
class TranscriptContext:
    """What the generator knows about the interview being scored."""

    answers: tuple[str, ...] = ()

    @property
    def insufficient(self) -> bool:
        """True when no answer has any content."""
        return not any(a.strip() for a in self.answers)

    @property
    def long_answers(self) -> bool:
        """True when answers average over 20 words."""
        words = sum(len(a.split()) for a in self.answers)
        return bool(self.answers) and words / len(self.answers) > 20

    @property
    def key(self) -> str:
        """Stable text identifying the transcript, hashed into scores."""
        return json.dumps(self.answers)


def parse_transcript(messages: list[Any]) -> TranscriptContext:
    """Extract answers from the <transcript_json> block of the last user message."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    matches = _TRANSCRIPT_RE.findall(_message_text(users[-1])) if users else []
    try:
        turns = json.loads(matches[-1]) if matches else []
    except ValueError:
        turns = []
    items = turns if isinstance(turns, list) else []
    answers = (t.get("answer") for t in items if isinstance(t, dict))
    return TranscriptContext(tuple(a if isinstance(a, str) else "" for a in answers))


def schema_in_prompt(messages: list[Any]) -> dict[str, Any] | None:
    """The JSON schema a system message carries after "JSON schema:" (JSON mode), if any."""
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "system":
            continue
        text = _message_text(message)
        at = text.rfind(_SCHEMA_IN_PROMPT)
        if at == -1:
            continue
        try:
            schema, _ = json.JSONDecoder().raw_decode(text[at + len(_SCHEMA_IN_PROMPT) :].lstrip())
        except ValueError:
            continue
        if isinstance(schema, dict):
            return schema
    return None


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return ["string"]


class _Generator:
    def __init__(self, root: dict[str, Any], rng: random.Random, ctx: TranscriptContext) -> None:
        self.root, self.rng, self.ctx = root, rng, ctx

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            ref: str = schema["$ref"]
            if not ref.startswith("#"):
                raise ValueError(f"unsupported $ref {ref!r}")
            node: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema, seen = node, seen + 1
        return schema

    def gen(self, schema: dict[str, Any], path: str, name: str, siblings: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        deep = path.count(".") + path.count("[") > _MAX_DEPTH
        if "const" in schema:
            return schema["const"]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                branches = [self.resolve(b) for b in schema[key]]
                non_null = [b for b in branches if _types(b) != ["null"]]
                pick = branches[0] if deep or not non_null else non_null[0]
                return self.gen(pick, path, name, siblings)
        types = _types(schema)
        enum = schema.get("enum")
        int_enum = isinstance(enum, list) and any(type(v) is int for v in enum)
        if name == "score" and ({"integer", "number"} & set(types) or int_enum):
            return self.score(schema, types, path, siblings)
        if isinstance(enum, list) and enum:
            non_null_values = [v for v in enum if v is not None]
            return self.rng.choice(non_null_values) if non_null_values else None
        non_null_types = [t for t in types if t != "null"]
        if not non_null_types or (deep and "null" in types):
            return None
        kind = non_null_types[0]
        if kind == "object":
            return self.obj(schema, path)
        if kind == "array":
            return self.array(schema, path, name, deep)
        if kind == "boolean":
            return self.ctx.insufficient if name == "insufficient_evidence" else False
        if kind in ("integer", "number"):
            return self.number(schema, kind == "integer")
        return self.string(schema, name)

    def obj(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        props = schema.get("properties") or {}
        for key, sub in props.items():
            out[key] = self.gen(sub, f"{path}.{key}", key, out)
        for key in schema.get("required") or ():
            out.setdefault(key, "simulated")
        return out

    def array(self, schema: dict[str, Any], path: str, name: str, deep: bool) -> list[Any]:
        if name == "evidence":
            count = 0 if self.ctx.insufficient else self.rng.randint(1, 2)
        else:
            count = 0 if deep else self.rng.randint(1, 2)
        count = max(count, int(schema.get("minItems", 0)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items")
        item_schema: dict[str, Any] = items if isinstance(items, dict) else {}
        return [self.gen(item_schema, f"{path}[{i}]", "", {}) for i in range(count)]

    def number(self, schema: dict[str, Any], integer: bool) -> int | float:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        x_lo, x_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if integer:
            lo = math.ceil(lo) if lo is not None else None if x_lo is None else math.floor(x_lo) + 1
            hi = math.floor(hi) if hi is not None else None if x_hi is None else math.ceil(x_hi) - 1
        else:
            lo, hi = (x_lo if lo is None else lo), (x_hi if hi is None else hi)
        lo = (hi - 10 if hi is not None else 0) if lo is None else lo
        hi = lo + 10 if hi is None else hi
        if integer:
            return self.rng.randint(lo, hi)
        value = min(max(round(self.rng.uniform(lo, hi), 3), lo), hi)
        # The midpoint also satisfies exclusive bounds when rounding lands on one.
        return (lo + hi) / 2 if value in (x_lo, x_hi) else value

    def score(
        self, schema: dict[str, Any], types: list[str], path: str, siblings: dict[str, Any]
    ) -> int | None:
        enum = schema.get("enum")
        nullable = "null" in types or (isinstance(enum, list) and None in enum)
        insufficient = siblings.get("insufficient_evidence", self.ctx.insufficient)
        if insufficient is True and nullable:
            return None
        digest = hashlib.sha256(f"{path}\n{self.ctx.key}".encode()).digest()
        target = (3 if self.ctx.long_answers else 1) + digest[0] % 3
        if isinstance(enum, list):
            allowed = [v for v in enum if isinstance(v, int) and not isinstance(v, bool)]
        else:
            allowed = list(range(int(schema.get("minimum", 1)), int(schema.get("maximum", 5)) + 1))
        if not allowed:
            return None
        return min(allowed, key=lambda v: (abs(v - target), v))

    def string(self, schema: dict[str, Any], name: str) -> str:
        if name == "quote":
            text = self.quote()
        elif name in _SENTENCE_NAMES:
            text = self.sentence(name)
        else:
            text = _FORMATS.get(str(schema.get("format")), "simulated")
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text.ljust(int(schema.get("minLength", 0)), "x")

    def quote(self) -> str:
        answers = [a for a in self.ctx.answers if a.strip()]
        if not answers:
            return ""
        answer = self.rng.choice(answers)
        words = list(_WORD_RE.finditer(answer))
        length = self.rng.randint(6, 12)
        if len(words) <= length:
            return answer.strip()
        start = self.rng.randint(0, len(words) - length)
        # Slice the original text so the quote is verbatim, whitespace included.
        return answer[words[start].start() : words[start + length - 1].end()]

    def sentence(self, name: str) -> str:
        turns = len(self.ctx.answers)
        if self.ctx.insufficient:
            return f"Simulated {name}: the {turns}-turn transcript has no substantive answers."
        detail = "detailed, concrete" if self.ctx.long_answers else "brief"
        plural = "" if turns == 1 else "s"
        return f"Simulated {name}: across {turns} turn{plural} the candidate gave {detail} answers."


def generate_instance(
    schema: dict[str, Any], *, rng: random.Random, context: TranscriptContext | None = None
) -> Any:
    """Generate a JSON value that validates against `schema`, realistic for interview scoring."""
    return _Generator(schema, rng, context or TranscriptContext()).gen(schema, "$", "", {})


@dataclass
class LiveConfig:
    """The simulator's knobs now: POST /control replaces them while it runs (fault drills)."""

    current: SimulatorConfig


CONFIG_KEY = web.AppKey("config", LiveConfig)
STATS_KEY: web.AppKey[dict[str, int]] = web.AppKey("stats")
# Failures and jitter come from their own RNG so they never disturb deterministic content.
_NOISE_KEY = web.AppKey("noise", random.Random)


def _openai_error(status: int, message: str, kind: str, retry: bool = False) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.json_response(body, status=status, headers={"Retry-After": "1"} if retry else None)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


async def _delay(app: web.Application, base: float) -> None:
    jitter = app[CONFIG_KEY].current.jitter_s
    total = base + (app[_NOISE_KEY].uniform(0, jitter) if jitter > 0 else 0.0)
    if total > 0:
        await asyncio.sleep(total)


async def _chat(request: web.Request) -> web.Response:
    app, cfg, stats = request.app, request.app[CONFIG_KEY].current, request.app[STATS_KEY]
    stats["llm_calls"] += 1
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _openai_error(400, "request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _openai_error(400, "'messages' must be a list", "invalid_request_error")
    # One roll decides the outcome so each rate is the exact share of requests.
    roll = app[_NOISE_KEY].random()
    if cfg.failure_rate <= roll < cfg.failure_rate + cfg.rate_limit_rate:
        stats["llm_errors"] += 1
        return _openai_error(429, "simulated rate limit", "rate_limit_exceeded", retry=True)
    await _delay(app, cfg.llm_latency_s)
    if roll < cfg.failure_rate:
        stats["llm_errors"] += 1
        return _openai_error(500, "simulated failure", "server_error")
    messages: list[Any] = body["messages"]
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema" and not cfg.json_schema:
        return _openai_error(
            400, "response_format json_schema is not supported here", "invalid_request_error"
        )
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if kind == "json_object":
        schema = schema_in_prompt(messages)
    if isinstance(schema, dict):
        seed_text = json.dumps({"messages": messages, "schema": schema}, sort_keys=True)
        rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
        try:
            value = generate_instance(schema, rng=rng, context=parse_transcript(messages))
        except (LookupError, TypeError, ValueError, RecursionError) as exc:
            return _openai_error(400, f"unsupported json schema: {exc}", "invalid_request_error")
        content = json.dumps(value)
    else:
        content = "simulated"
    p = _tokens("".join(_message_text(m) for m in messages if isinstance(m, dict)))
    c = _tokens(content)
    message = {"role": "assistant", "content": content}
    return web.json_response(
        {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "simulated")),
            "system_fingerprint": "fp_simulated",
            "choices": [
                {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            ],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }
    )


def _detail(status: int, message: str, retry: bool = False) -> web.Response:
    headers = {"Retry-After": "1"} if retry else None
    return web.json_response({"detail": message}, status=status, headers=headers)


async def _analyze(request: web.Request) -> web.Response:
    app, cfg, stats = request.app, request.app[CONFIG_KEY].current, request.app[STATS_KEY]
    stats["analyzer_calls"] += 1
    if cfg.analyzer_token is not None:
        expected = f"Bearer {cfg.analyzer_token}".encode()
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return _detail(401, "missing or invalid bearer token")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _detail(400, "request body is not valid JSON")
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str) or len(url) > 2048 or not url.startswith(("http://", "https://")):
        return _detail(400, "'url' must be an http(s) URL of at most 2048 characters")
    parts = urlsplit(url)
    host = parts.hostname or ""
    name, title = body.get("candidate_name"), body.get("position_title")
    if not host or not all(v is None or isinstance(v, str) for v in (name, title)):
        return _detail(400, "malformed request")
    roll = app[_NOISE_KEY].random()
    await _delay(app, cfg.analyzer_latency_s)
    if roll < cfg.failure_rate:
        stats["analyzer_errors"] += 1
        return _detail(503, "simulated outage", retry=True)
    if "/404" in parts.path or host.endswith(".invalid"):
        return _detail(404, "nothing found at this URL")
    digest = hashlib.sha256(url.encode()).digest()
    score = 40 + int.from_bytes(digest[:4], "big") % 56
    who = name or "the candidate"
    role = f" for the {title} position" if title else ""
    summary = f"Simulated analysis of {host}{parts.path} by {who}{role}: portfolio score {score}."
    first = digest[4] % len(_STRENGTHS)
    analysis = {
        "score": score,
        "summary": summary[:4000],
        "strengths": [_STRENGTHS[first], _STRENGTHS[(first + 1) % len(_STRENGTHS)]],
        "risks": [_RISKS[digest[5] % len(_RISKS)]],
        "languages": ["Python", _LANGUAGES[digest[6] % len(_LANGUAGES)]],
    }
    return web.json_response(analysis)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY])


_RATES = ("failure_rate", "rate_limit_rate")
_SECONDS = ("llm_latency_s", "analyzer_latency_s", "jitter_s")


async def _control(request: web.Request) -> web.Response:
    """Change latencies and failure rates of the running simulator; answers the knobs now."""
    live = request.app[CONFIG_KEY]
    try:
        changes = json.loads(await request.read())
    except ValueError:
        return _detail(400, "request body is not valid JSON")
    if not isinstance(changes, dict):
        return _detail(400, "expected an object of knobs")
    for name, value in changes.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if name not in _RATES + _SECONDS or not number or value < 0:
            return _detail(400, f"{name!r} is not a knob or not a number >= 0")
        if name in _RATES and value > 1:
            return _detail(400, f"{name!r} is a share in 0..1")
    live.current = dataclasses.replace(live.current, **changes)
    knobs = dataclasses.asdict(live.current)
    return web.json_response({k: v for k, v in knobs.items() if k in _RATES + _SECONDS})


def build_app(config: SimulatorConfig) -> web.Application:
    """Build the aiohttp application serving both simulated upstreams."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[CONFIG_KEY] = LiveConfig(config)
    app[STATS_KEY] = {"llm_calls": 0, "llm_errors": 0, "analyzer_calls": 0, "analyzer_errors": 0}
    app[_NOISE_KEY] = random.Random()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/chat/completions", _chat)
    app.router.add_post("/analyze", _analyze)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/control", _control)
    return app


async def start_simulator(
    config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start on host:port (0 = free port); return (runner, bound port); stop: runner.cleanup()."""
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    # A large backlog so bursts of 1,000+ simultaneous connects are not refused.
    await web.TCPSite(runner, host, port, backlog=4096).start()
    bound: int = runner.addresses[0][1]
    return runner, bound


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    runner, bound = await start_simulator(config, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"simulator: LLM base URL http://{host}:{bound}/v1, analyzer http://{host}:{bound}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_simulator(config: SimulatorConfig, *, host: str, port: int) -> None:
    """Blocking: serve until SIGINT/SIGTERM, printing one line with the URLs."""
    asyncio.run(_serve(config, host, port))
