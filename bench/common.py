"""What the load generator and the reference designs share: interviews and upstream calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.llm.prompts import build_messages, response_schema

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "senior-backend-strong.json"


def base_interview() -> dict[str, Any]:
    """The benchmark's interview: a sample with a rubric, a portfolio and notifications."""
    body: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return body


def distinct_interview(base: dict[str, Any], tag: str) -> dict[str, Any]:
    """`base` with `tag` in its last answer, so that no two requests share a cache key."""
    turns = [dict(turn) for turn in base["transcript"]]
    turns[-1]["answer"] = f"{turns[-1]['answer']} (benchmark {tag})"
    return {**base, "transcript": turns}


def llm_request(interview: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body the service would send for `interview` (one sample)."""
    criteria = interview.get("rubric", {}).get("criteria") or [
        {"key": "overall", "description": "Overall interview performance", "weight": 1}
    ]
    position = interview["position"]
    portfolio = interview.get("portfolio") or {}
    messages = build_messages(
        position_title=position["title"],
        position_level=position.get("level"),
        position_description=position.get("description"),
        criteria=criteria,
        transcript=interview["transcript"],
        portfolio_url=portfolio.get("url"),
    )
    schema = response_schema([c["key"] for c in criteria])
    return {
        "model": "simulated",
        "messages": messages,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "interview_scores", "strict": True, "schema": schema},
        },
    }


def analyzer_request(interview: dict[str, Any]) -> dict[str, Any]:
    """The analyzer body for `interview`."""
    return {"url": interview["portfolio"]["url"], "position_title": interview["position"]["title"]}


def combine(completion: dict[str, Any], analysis: dict[str, Any]) -> dict[str, Any]:
    """A minimal evaluation: the mean criterion score blended with the portfolio score."""
    content = json.loads(completion["choices"][0]["message"]["content"])
    scores = [c["score"] for c in content["criteria"].values() if c["score"] is not None]
    interview_score = 25.0 * (sum(scores) / len(scores) - 1) if scores else 0.0
    overall = 0.8 * interview_score + 0.2 * float(analysis["score"])
    return {"overall_score": round(overall, 1), "summary": content["summary"], "cached": False}
