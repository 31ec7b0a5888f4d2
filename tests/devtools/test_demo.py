"""`interview-scorer demo` (make demo): the sample interviews scored end to end, and the sum of
upstream latencies it compares the wall time with, computed from the interviews."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.devtools.demo import upstream_sum
from tests.databases import postgres_mode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_the_upstream_sum_counts_the_analyzer_only_for_a_portfolio() -> None:
    with_portfolio = {"portfolio": {"url": "https://github.com/janedoe"}}
    interviews = {"a": with_portfolio, "b": {"portfolio": None}, "c": {}, "d": with_portfolio}

    total, how = upstream_sum(interviews)

    assert total == 4 * 1.0 + 2 * 0.5
    assert how == "4 LLM calls of 1.0 s and 2 analyzer calls of 0.5 s"


def test_the_demo_scores_the_examples_and_leaves_their_mails(tmp_path: Path) -> None:
    if postgres_mode():
        pytest.skip("the demo runs on its own SQLite database: run once, in the SQLite pass")
    examples = {f.stem: json.loads(f.read_text()) for f in EXAMPLES.glob("*.json")}
    mails = sum(
        bool((body.get("notify") or {}).get("candidate"))
        + len((body.get("notify") or {}).get("recruiters", []))
        for body in examples.values()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}

    result = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--examples", str(EXAMPLES),
         "--workdir", str(tmp_path / "demo")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    portfolios = sum(1 for body in examples.values() if body.get("portfolio"))
    total = len(examples) * 1.0 + portfolios * 0.5
    assert f"{len(examples)} of {len(examples)} interviews scored" in result.stdout
    assert f"the upstream latencies add up to {total:.1f} s" in result.stdout
    assert len(list((tmp_path / "demo" / "mail").glob("*.eml"))) == mails
