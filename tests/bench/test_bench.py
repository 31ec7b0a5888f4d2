"""The benchmark's own parts: its requests, the reference designs, and how it judges targets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench import (
    loadgen,
    profile,
    reference_floor,
    reference_naive_async,
    reference_sync,
    report,
)
from service.devtools.simulator import SimulatorConfig, start_simulator
from service.evaluations.schemas import EvaluationCreate


def test_distinct_bodies_are_valid_and_all_different() -> None:
    bodies = [json.loads(b) for b in loadgen.bodies(50, mode="distinct", tag="t")]

    for body in bodies:
        EvaluationCreate.model_validate(body)
    assert len({json.dumps(b["transcript"]) for b in bodies}) == 50
    assert bodies[0]["portfolio"]
    assert bodies[0]["notify"]


def test_repeat_bodies_are_one_interview() -> None:
    assert len(set(loadgen.bodies(5, mode="repeat", tag="t"))) == 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert loadgen.percentile(values, 0.5) == 50.0
    assert loadgen.percentile(values, 0.99) == 99.0
    assert loadgen.percentile([], 0.5) is None


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    runner, port = await start_simulator(SimulatorConfig(llm_latency_s=0, analyzer_latency_s=0))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("module", [reference_floor, reference_sync, reference_naive_async])
async def test_reference_designs_score_through_the_simulator(
    module: Any, simulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_SIMULATOR_URL", simulator)
    app: FastAPI = module.create_app()
    body = json.loads(loadgen.bodies(1, mode="distinct", tag="t")[0])

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.post("/v1/evaluations", json=body)

    assert response.status_code == 201
    assert 0 <= response.json()["overall_score"] <= 100
    assert response.json()["cached"] is False


def _run(design: str, level: int, **figures: Any) -> dict[str, Any]:
    run = {
        "design": design,
        "concurrency": level,
        "mode": "distinct",
        "requests": 10,
        "ok": 10,
        "errors": 0,
        "cached": 0,
        "throughput_rps": 10.0,
        "p50_s": 1.01,
        "p95_s": 1.05,
        "p99_s": 1.08,
        "server_rss_before_mb": 100.0,
        "server_rss_peak_mb": 200.0,
        "server_rss_after_mb": 120.0,
        "server_cpu_share": 0.5,
        "simulator_cpu_share": 0.1,
        "loadgen_cpu_share": 0.1,
        "server_cpu_ms_per_request": 3.0,
    }
    return {**run, **figures}


def _results(*runs: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {"cores": 2},
        "config": {
            "llm_latency_s": 1.0,
            "analyzer_latency_s": 0.5,
            "designs": ["service", "sync"],
            "memory_bound_mb": 600.0,
        },
        "runs": list(runs),
        "duration_s": 1.0,
    }


def test_targets_report_what_is_met_and_what_is_missed() -> None:
    results = _results(
        _run("service", 1, p50_s=1.01),
        _run("service", 100, throughput_rps=80.0),
        _run(
            "service",
            1000,
            throughput_rps=300.0,
            errors=2,
            server_cpu_ms_per_request=3.2,
            worker_cpu_ms_per_mail=1.4,
            mails_left=0,
            drain_s=2.0,
            server_rss_peak_mb=260.0,
        ),
        _run("floor", 1000, throughput_rps=350.0),
        _run("service_x2", 1000, throughput_rps=400.0),
        _run(
            "service",
            100,
            mode="repeat",
            throughput_rps=1200.0,
            cached=10,
            server_cpu_ms_per_request=1.5,
        ),
    )

    met = {t["target"]: t["met"] for t in report.targets(results)}

    assert met == {
        "c=1 p50": True,
        "c=100 throughput": False,
        "c=1000 errors": False,
        "c=1000 vs the floor": True,
        "API CPU per fresh request (c=1000)": True,
        "worker CPU per delivered mail": False,
        "every mail of c=1000 delivered": True,
        "c=1000 peak RSS of the API": False,
        "--workers 2 at c=1000": False,
        "cached repeat": True,
        "API CPU per cached request": False,
        "load generator not the bottleneck": True,
    }


def test_ratio_to_the_floor_is_in_the_table() -> None:
    results = _results(
        _run("service", 1000, throughput_rps=300.0), _run("floor", 1000, throughput_rps=400.0)
    )

    service_row = report.table(results).splitlines()[2]

    assert " 0.75 " in service_row


def test_report_writes_table_json_and_chart(tmp_path: Path) -> None:
    results = _results(_run("service", 1), _run("service", 10), _run("sync", 1), _run("sync", 10))

    report.write(results, tmp_path)

    assert json.loads((tmp_path / "results.json").read_text())["targets"]
    assert "sequential sync" in (tmp_path / "results.txt").read_text()
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_breakdown_names_the_innermost_known_part(tmp_path: Path) -> None:
    stacks = tmp_path / "profile.txt"
    stacks.write_text(
        # The SDK's request models under our LLM client: the innermost known part is httpx.
        "main (a.py:1);LLMClient._call (service/llm/client.py:9);"
        "AsyncAPIClient.post (openai/_base_client.py:1);Request.__init__ (httpx/_models.py:1) 2\n"
        # The standard library's hashing under the canonical form counts as our code.
        "main (a.py:1);Interview.result_key (service/evaluations/canonical.py:3);"
        "_hashlib.openssl_sha256 (<frozen _hashlib>:1) 1\n"
        "main (a.py:1);GroupWriter._commit_sync (service/writer.py:5) 1\n"
    )

    assert profile.breakdown(stacks) == [
        ("httpx request and response models (under the SDK)", 0.5),
        ("our code: evaluations (canonical form, prompt, combination, answer bytes)", 0.25),
        ("our code: grouped writes (writer, its commit thread)", 0.25),
    ]
