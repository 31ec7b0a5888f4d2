"""/metrics: requests by route and status, upstream outcomes and latency, tokens; and the sum
across workers when several serve."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import respx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    analysis,
    completion,
    interview,
    scores_content,
)
from tests.servers import metric_processes, serving

CHAT = f"{LLM_BASE_URL}/chat/completions"
ANALYZE = f"{ANALYZER_URL}/analyze"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with these labels (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def metrics(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_counts_requests_upstream_calls_and_tokens(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(
        return_value=completion(
            scores_content({"technical_depth": 4, "communication": 3}),
            prompt_tokens=120,
            completion_tokens=30,
        )
    )
    upstream.post(ANALYZE).mock(return_value=analysis(82))
    before = await metrics(client)

    created = await client.post("/v1/evaluations", json=interview(), headers=auth)
    assert created.status_code == 201
    read = await client.get(f"/v1/evaluations/{created.json()['id']}", headers=auth)
    assert read.status_code == 200
    missing = await client.get("/v1/evaluations/nope", headers=auth)
    assert missing.status_code == 404
    after = await metrics(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    requests = "scorer_http_requests_total"
    assert delta(requests, method="POST", route="/v1/evaluations", status="201") == 1
    # Route templates, never ids or query strings.
    item = "/v1/evaluations/{evaluation_id}"
    assert delta(requests, method="GET", route=item, status="200") == 1
    assert delta(requests, method="GET", route=item, status="404") == 1
    assert "/v1/evaluations/nope" not in after
    latency = "scorer_http_request_duration_seconds_count"
    assert delta(latency, method="POST", route="/v1/evaluations", status="201") == 1
    assert delta("scorer_upstream_calls_total", upstream="llm", outcome="ok") == 1
    assert delta("scorer_upstream_calls_total", upstream="analyzer", outcome="ok") == 1
    upstream_latency = "scorer_upstream_call_duration_seconds_count"
    assert delta(upstream_latency, upstream="llm", outcome="ok") == 1
    assert delta("scorer_llm_tokens_total", kind="prompt") == 120
    assert delta("scorer_llm_tokens_total", kind="completion") == 30
    assert sample(after, "scorer_upstream_calls_in_flight", upstream="llm") == 0
    # The scrape itself is in flight while it is rendered.
    assert sample(after, "scorer_http_requests_in_flight") == 1
    for hook in ("scorer_outbox_depth", "scorer_outbox_failures_total"):
        assert f"# TYPE {hook.removesuffix('_total')}" in after


@pytest.mark.parametrize("settings_overrides", [{"llm_max_retries": 0}])
async def test_counts_failed_upstream_calls_by_outcome(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter
) -> None:
    upstream.post(CHAT).mock(
        side_effect=[
            httpx.Response(429, json={"error": {"message": "slow down"}}),
            completion("not json"),
            completion("still not json"),
        ]
    )
    upstream.post(ANALYZE).mock(return_value=httpx.Response(503))
    before = await metrics(client)

    limited = await client.post("/v1/evaluations", json=interview(), headers=auth)
    invalid = await client.post("/v1/evaluations", json=interview(), headers=auth)
    after = await metrics(client)

    assert limited.status_code == 503
    assert invalid.status_code == 502

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    calls = "scorer_upstream_calls_total"
    assert delta(calls, upstream="llm", outcome="rate_limited") == 1
    assert delta(calls, upstream="llm", outcome="ok") == 2
    assert delta("scorer_upstream_invalid_answers_total", upstream="llm") == 2
    assert delta(calls, upstream="analyzer", outcome="unavailable") == 2
    requests = "scorer_http_requests_total"
    assert delta(requests, method="POST", route="/v1/evaluations", status="503") == 1
    assert delta(requests, method="POST", route="/v1/evaluations", status="502") == 1


def test_several_workers_report_one_sum(database_url: str, tmp_path: Path) -> None:
    """Each API process counts in its own files; /metrics adds them up whichever answers."""
    shared = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with serving(database_url=database_url, workdir=tmp_path, workers=2, env=env) as base_url:
        # /readyz, which nothing else asks (serving waits on /healthz), each request on a new
        # connection, many at a time: the kernel hands each to whichever process accepts it
        # first, so both get some. Bounded, not timed.
        sent = 0
        while len(_answered(shared)) < 2 and sent < 2000:
            with ThreadPoolExecutor(8) as pool:
                statuses = list(
                    pool.map(lambda _: _get(base_url, "/readyz").status_code, range(40))
                )
            assert statuses == [200] * 40
            sent += 40
        # A process counts a request just after its last byte is sent: wait for the files.
        deadline = time.monotonic() + 30
        while sum(_answered(shared).values()) < sent:
            assert time.monotonic() < deadline, _answered(shared)
            time.sleep(0.05)
        answered = _answered(shared)
        assert len(answered) == 2, f"one API process answered all {sent} requests: {answered}"
        assert sum(answered.values()) == sent
        # Every scrape, whichever process serves it, reports the sum of both.
        for _ in range(6):
            total = sample(_get(base_url, "/metrics").text, REQUESTS, route="/readyz")
            assert total == sent
        # The background worker that serve starts beside them writes its own files too.
        deadline = time.monotonic() + 30
        while len(metric_processes(shared)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(metric_processes(shared)) == 3


REQUESTS = "scorer_http_requests_total"


def _get(base_url: str, path: str) -> httpx.Response:
    # A client of its own: no keep-alive connection carries the request to the same process.
    with httpx.Client(base_url=base_url, timeout=10) as http:
        return http.get(path)


def _answered(shared: Path) -> dict[str, float]:
    """The /readyz requests each process has answered, by pid, from its own counter file."""
    answered: dict[str, float] = {}
    for path in shared.glob("counter_*.db"):
        # prometheus-client's own merge, of one process's file.
        metrics = MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        count = sum(
            s.value
            for metric in metrics
            for s in metric.samples
            if s.name == REQUESTS and s.labels.get("route") == "/readyz"
        )
        if count:
            answered[path.stem.rsplit("_", 1)[-1]] = count
    return answered
