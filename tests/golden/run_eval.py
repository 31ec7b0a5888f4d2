"""Score the golden interviews through the whole service against a real model, and print how
often the model agrees with the ranges written by hand.

    make eval LLM_BASE_URL=https://api.openai.com/v1 LLM_API_KEY=sk-... LLM_MODEL=gpt-4o-mini

LLM_API_KEY falls back to OPENAI_API_KEY, LLM_MODEL to gpt-4o-mini; SCORER_SCORING_SAMPLES and
the other SCORER_* settings apply as in the service. Against the built-in simulator (scores
there are arbitrary, so this is a smoke check of the path, not of the model):

    interview-scorer simulate &  make eval LLM_BASE_URL=http://127.0.0.1:8900/v1

The app runs in-process on a throwaway SQLite database; nothing else is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

GOLDEN_DIR = Path(__file__).parent
CANDIDATE = {"name": "Golden Case", "email": "golden@example.com"}


def load_cases() -> list[dict[str, Any]]:
    """Every golden case, by file name."""
    return [json.loads(p.read_text()) for p in sorted(GOLDEN_DIR.glob("*.json"))]


def request_body(case: dict[str, Any]) -> dict[str, Any]:
    """The POST /v1/evaluations body of a case: a synthetic candidate, no portfolio, no mail."""
    body: dict[str, Any] = {
        "candidate": CANDIDATE,
        "position": case["position"],
        "transcript": case["transcript"],
        "notify": {"candidate": False, "recruiters": []},
        "language": case.get("language", "en"),
    }
    if case.get("rubric"):
        body["rubric"] = case["rubric"]
    return body


@dataclass
class Outcome:
    """How a case's evaluation compares with its expectations."""

    name: str
    agrees: bool
    summary: str
    mismatches: list[str] = field(default_factory=list)
    criteria_checked: int = 0
    criteria_agreeing: int = 0


def _in(value: float, bounds: list[float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def check_case(case: dict[str, Any], status: int, body: dict[str, Any]) -> Outcome:
    """Compare one response with the case's expected outcome and ranges."""
    expected = case["expected"]
    name = case["name"]
    if expected["outcome"] == "rejected":
        rule = (body.get("errors") or [{}])[0].get("type") if status == 422 else None
        ok = status == 422 and rule == expected["rule"]
        got = f"422 {rule}" if status == 422 else f"{status}"
        return Outcome(name, ok, got, [] if ok else [f"expected 422 {expected['rule']}"])
    if status != 201:
        return Outcome(name, False, f"{status}", [f"expected 201, got {status}: {body}"])
    mismatches: list[str] = []
    overall = body.get("overall_score")
    if overall is None:
        if not expected.get("overall_may_be_null"):
            mismatches.append("overall: abstained, expected a score")
    elif not _in(overall, expected["overall"]):
        mismatches.append(f"overall: {overall} outside {expected['overall']}")
    scores = {c["key"]: c["score"] for c in body.get("criteria", [])}
    checked = agreeing = 0
    for key, want in expected["criteria"].items():
        checked += 1
        score = scores.get(key)
        if want.get("abstain"):
            ok = score is None
        elif score is None:
            ok = bool(want.get("abstain_ok"))
        else:
            ok = _in(score, want["range"])
        agreeing += ok
        if not ok:
            wanted = "abstain" if want.get("abstain") else want["range"]
            mismatches.append(f"{key}: {score} (expected {wanted})")
    summary = f"{overall} {body.get('recommendation')}"
    return Outcome(name, not mismatches, summary, mismatches, checked, agreeing)


async def _score_all(base_url: str, api_key: str, model: str) -> list[Outcome]:
    # Imported here so that `check_case` stays usable without building an app.
    from service.auth.service import create_api_key
    from service.config import Settings
    from service.main import create_app
    from service.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'eval.db'}"
        await asyncio.to_thread(upgrade, database_url)
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            llm_provider="openai",
            llm_base_url=base_url,
            llm_api_key=api_key,
            llm_model=model,
            http_transport="httpx",
            email_backend="file",
            email_dir=Path(tmp) / "mail",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with app.state.sessionmaker() as session, session.begin():
                _, key = await create_api_key(session, name="eval", scopes=("write", "read"))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://scorer.eval", timeout=600
            ) as client:
                limit = asyncio.Semaphore(4)

                async def run(case: dict[str, Any]) -> Outcome:
                    async with limit:
                        response = await client.post(
                            "/v1/evaluations",
                            json=request_body(case),
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    return check_case(case, response.status_code, response.json())

                return list(await asyncio.gather(*(run(c) for c in load_cases())))


def report(outcomes: list[Outcome]) -> str:
    """The table of cases and the agreement figures."""
    lines = []
    for o in outcomes:
        mark = "agree   " if o.agrees else "DISAGREE"
        lines.append(f"{mark} {o.name:<34} {o.summary}")
        lines.extend(f"           - {m}" for m in o.mismatches)
    cases = sum(o.agrees for o in outcomes)
    checked = sum(o.criteria_checked for o in outcomes)
    agreeing = sum(o.criteria_agreeing for o in outcomes)
    lines.append(
        f"cases agreeing: {cases}/{len(outcomes)} ({cases / len(outcomes):.0%}); "
        f"criteria within range: {agreeing}/{checked} ({agreeing / max(checked, 1):.0%})"
    )
    return "\n".join(lines)


def main() -> int:
    """Run the golden set against LLM_BASE_URL and print the agreement."""
    base_url = os.environ.get("LLM_BASE_URL")
    if not base_url:
        print("LLM_BASE_URL is required, e.g. make eval LLM_BASE_URL=http://127.0.0.1:8900/v1")
        return 2
    api_key = os.environ.get("LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "unused"
    model = os.environ.get("LLM_MODEL") or "gpt-4o-mini"
    print(f"golden set against {base_url} ({model})")
    outcomes = asyncio.run(_score_all(base_url, api_key, model))
    print(report(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
