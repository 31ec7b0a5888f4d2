"""`interview-scorer demo`: the embedded defaults end to end, with real processes and HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from asyncio.subprocess import Process
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

LLM_LATENCY_S = 1.0
ANALYZER_LATENCY_S = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


async def _wait_ready(client: httpx.AsyncClient, url: str, process: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{url} exited with status {process.returncode}")
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within 30 s")


async def _start(argv: list[str], env: dict[str, str]) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *argv, env=env, stdout=subprocess.DEVNULL
    )


async def _stop(processes: list[Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _run(argv: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *argv, env=env, stdout=subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"`interview-scorer {' '.join(argv)}` failed")
    return out.decode()


async def _mails_sent(
    client: httpx.AsyncClient, base_url: str, key: str, responses: list[httpx.Response]
) -> None:
    ids = [r.json()["id"] for r in responses if r.status_code == 201]
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reads = [
            await client.get(f"{base_url}/v1/evaluations/{id_}", headers=headers) for id_ in ids
        ]
        if all(n["status"] == "sent" for r in reads for n in r.json()["notifications"]):
            return
        await asyncio.sleep(0.1)
    print("demo: some mails were still unsent after 30 s", file=sys.stderr)


def _print_evaluation(name: str, evaluation: dict[str, Any]) -> None:
    criteria = ", ".join(
        f"{c['key']} {c['score'] if c['score'] is not None else '-'}/{c['max_score']}"
        for c in evaluation["criteria"]
    )
    portfolio = evaluation.get("portfolio") or {}
    print(
        f"  {name:30} {evaluation['overall_score']!s:>5}  {evaluation['recommendation']:15} "
        f"portfolio {portfolio.get('score', '-')!s:>3} ({portfolio.get('status', 'none')})  "
        f"{evaluation['timings_ms']['total']} ms"
    )
    print(f"  {'':30} {criteria}")


def upstream_sum(interviews: dict[str, Any]) -> tuple[float, str]:
    """What the interviews' upstream calls add up to, one after another, and how: every
    interview asks the LLM once; only those with a portfolio ask the analyzer."""
    portfolios = sum(1 for body in interviews.values() if (body.get("portfolio") or {}).get("url"))
    total = len(interviews) * LLM_LATENCY_S + portfolios * ANALYZER_LATENCY_S
    how = (
        f"{len(interviews)} LLM calls of {LLM_LATENCY_S} s and "
        f"{portfolios} analyzer calls of {ANALYZER_LATENCY_S} s"
    )
    return total, how


def _prepare(examples: str, workdir: str) -> tuple[dict[str, Any], Path]:
    interviews = {f.stem: json.loads(f.read_text()) for f in sorted(Path(examples).glob("*.json"))}
    work = Path(workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return interviews, work


async def run_demo(*, examples: str, workdir: str) -> int:
    """Migrate SQLite, start the simulators and the API, score the examples, stop everything."""
    interviews, work = await asyncio.to_thread(_prepare, examples, workdir)
    if not interviews:
        print(f"demo: no sample interviews (*.json) in {examples}", file=sys.stderr)
        return 2
    sim_port, api_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "SCORER_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'demo.db'}",
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_LLM_BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
        "SCORER_PORTFOLIO_ANALYZER_URL": f"http://127.0.0.1:{sim_port}",
        "SCORER_EMAIL_BACKEND": "file",
        "SCORER_EMAIL_DIR": str(work / "mail"),
        "SCORER_LOG_LEVEL": "warning",
    }
    processes: list[Process] = []
    try:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            _step(f"migrating SQLite at {work / 'demo.db'}")
            await _run(["migrate"], env)
            _step(
                f"starting the simulated LLM ({LLM_LATENCY_S} s a call) and portfolio analyzer "
                f"({ANALYZER_LATENCY_S} s) on 127.0.0.1:{sim_port}"
            )
            simulator = await _start(
                ["simulate", "--port", str(sim_port), "--llm-latency", str(LLM_LATENCY_S),
                 "--analyzer-latency", str(ANALYZER_LATENCY_S)],
                env,
            )  # fmt: skip
            processes.append(simulator)
            await _wait_ready(client, f"http://127.0.0.1:{sim_port}/healthz", simulator)
            _step(f"starting the API on http://127.0.0.1:{api_port}")
            api = await _start(["serve", "--port", str(api_port)], env)
            processes.append(api)
            await _wait_ready(client, f"http://127.0.0.1:{api_port}/healthz", api)
            _step("creating an API key")
            key = (await _run(["api-keys", "create", "demo"], env)).strip().splitlines()[-1]
            _step(f"scoring {len(interviews)} sample interviews from {examples}/ concurrently")
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"http://127.0.0.1:{api_port}/v1/evaluations",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for body in interviews.values()
                )
            )
            wall = time.perf_counter() - started
            # The worker beside the API sends the follow-up mails just after: wait for them,
            # so that they are in the mail folder when the demo says so.
            _step("waiting for the worker to send the follow-up mails")
            await _mails_sent(client, f"http://127.0.0.1:{api_port}", key, responses)
    finally:
        await _stop(processes)
    failures = 0
    print(f"\n  {'interview':30} {'score':>5}  {'recommendation':15} portfolio")
    for name, response in zip(interviews, responses, strict=True):
        if response.status_code != 201:
            failures += 1
            print(f"  {name:30} failed: {response.status_code} {response.text[:200]}")
            continue
        _print_evaluation(name, response.json())
    sequential, how = upstream_sum(interviews)
    print(
        f"\n{len(interviews) - failures} of {len(interviews)} interviews scored in {wall:.2f} s; "
        f"the upstream latencies add up to {sequential:.1f} s ({how}), "
        f"so the service was {sequential / wall:.1f}x faster than calling them one after another."
    )
    print(f"The database and the follow-up mails are in {work}/.")
    return 1 if failures else 0
