"""`make bench`: the service against the floor and two reference designs, on loopback.

Starts the simulator, then each design in turn, drives it with bench/loadgen.py (its own process)
at each concurrency level, samples the server's memory and the CPU of each of its processes (the
API and, for the service, its background worker), waits after each level until the worker has
delivered every mail the level queued, and writes bench/results/. The floor
(bench/reference_floor.py) is what the service's figures are divided by: the same two upstream
calls through the same clients, gathered, nothing stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import profile, report
from bench.processes import (
    HOST,
    MemorySampler,
    Processes,
    cpu_seconds,
    free_port,
    python,
    rss_mb,
    split_cpu,
    wait_healthy,
)
from bench.queue import Queue

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = ("service", "floor", "naive_async", "sync")
APPS = {
    "floor": "bench.reference_floor:create_app",
    "sync": "bench.reference_sync:create_app",
    "naive_async": "bench.reference_naive_async:create_app",
}
# Requests per level, by design. The sync design serves about 40 / 1.5 s = 27 requests a second,
# so it gets fewer: enough to fill every level once, few enough to keep the run short.
DEFAULT_REQUESTS = {
    "service": {1: 5, 10: 50, 100: 1000, 1000: 6000},
    "service_x2": {1000: 8000},
    "floor": {1: 5, 10: 50, 100: 1000, 1000: 6000},
    "naive_async": {1: 5, 10: 50, 100: 300, 1000: 1000},
    "sync": {1: 5, 10: 30, 100: 200, 1000: 1000},
}
SETTLE_S = 3.0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--levels", type=_ints, default=[1, 10, 100, 1000])
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--llm-latency", type=float, default=1.0, metavar="S")
    parser.add_argument("--analyzer-latency", type=float, default=0.5, metavar="S")
    parser.add_argument(
        "--requests-per-level",
        type=int,
        default=None,
        metavar="N",
        help="requests at every level and design (default: a table per design, see run.py)",
    )
    parser.add_argument(
        "--level-time-limit",
        type=float,
        default=30.0,
        metavar="S",
        help="no new request starts after this; in-flight ones finish",
    )
    parser.add_argument(
        "--cached-requests",
        type=int,
        default=3000,
        metavar="N",
        help="requests of the cached-repeat run (0 skips it)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="the load generator gives up on a request after this (counted as an error)",
    )
    parser.add_argument("--cached-concurrency", type=int, default=100)
    parser.add_argument(
        "--two-processes-level",
        type=int,
        default=1000,
        metavar="LEVEL",
        help="run the service with --workers 2 (two API processes, one worker) at this level "
        "after the others (0 skips it)",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the service's database: SQLite (the embedded default) or a throwaway PostgreSQL "
        "cluster started for the run",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="after each level, how long to wait for the worker to deliver what it queued",
    )
    parser.add_argument(
        "--memory-bound-mb",
        type=float,
        default=600.0,
        help="the service's RSS bound with 1,000 requests in flight",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=None,
        metavar="LEVEL",
        help="record the service with py-spy (GIL-holding samples) at this level",
    )
    parser.add_argument(
        "--profile-cached",
        action="store_true",
        help="record the service with py-spy during the cached-repeat run",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra SCORER_* setting for the service, e.g. SCORER_DATABASE_POOL_SIZE=20",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = set(args.designs) - set(DESIGNS)
    if unknown:
        parser.error(f"unknown designs: {', '.join(sorted(unknown))}")
    return args


def _base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def service_env(
    workdir: Path, simulator: str, extra: list[str], *, database_url: str
) -> dict[str, str]:
    """The service on its embedded defaults: SQLite, in-memory cache, file emails."""
    return {
        **_base_env(workdir),
        "SCORER_DATABASE_URL": database_url,
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_LLM_BASE_URL": f"{simulator}/v1",
        "SCORER_PORTFOLIO_ANALYZER_URL": simulator,
        "SCORER_EMAIL_BACKEND": "file",
        "SCORER_EMAIL_DIR": str(workdir / "mail"),
        "SCORER_LOG_LEVEL": "warning",
        # The cap on concurrent LLM calls is not what is measured here.
        "SCORER_LLM_MAX_CONCURRENCY": "2000",
        **dict(item.split("=", 1) for item in extra),
    }


def start_simulator(procs: Processes, args: argparse.Namespace, workdir: Path) -> tuple[str, int]:
    """The simulator on a free loopback port: its base URL and pid."""
    child = procs.start(
        "simulator",
        [
            python(),
            "-m",
            "service",
            "simulate",
            "--host",
            HOST,
            "--port",
            "0",
            "--llm-latency",
            str(args.llm_latency),
            "--analyzer-latency",
            str(args.analyzer_latency),
        ],
        _base_env(workdir),
        stdout_pipe=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().decode()
    # "simulator: LLM base URL http://127.0.0.1:P/v1, analyzer http://127.0.0.1:P"
    base = line.rsplit(" ", 1)[-1].strip()
    if not base.startswith(f"http://{HOST}:"):
        raise RuntimeError(f"the simulator did not start: {line!r}")
    wait_healthy(f"{base}/healthz", child)
    return base, child.pid


def start_design(
    procs: Processes,
    design: str,
    *,
    workdir: Path,
    simulator: str,
    extra: list[str],
    database_url: str,
) -> tuple[subprocess.Popen[bytes], str, str | None]:
    """Start one design on a free port: its process, its evaluations URL and its API key."""
    port = free_port()
    key: str | None = None
    if design.startswith("service"):
        env = service_env(workdir, simulator, extra, database_url=database_url)
        cli = [python(), "-m", "service"]
        subprocess.run([*cli, "migrate"], env=env, cwd=workdir, check=True, capture_output=True)
        created = subprocess.run(
            [*cli, "api-keys", "create", "bench"],
            env=env,
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        processes = "2" if design == "service_x2" else "1"
        argv = [*cli, "serve", "--host", HOST, "--port", str(port), "--workers", processes]
    else:
        env = {**_base_env(workdir), "BENCH_SIMULATOR_URL": simulator}
        argv = [
            python(),
            "-m",
            "uvicorn",
            "--factory",
            APPS[design],
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ]
    child = procs.start(design, argv, env)
    base = f"http://{HOST}:{port}"
    wait_healthy(f"{base}/healthz", child)
    return child, f"{base}/v1/evaluations", key


def run_level(
    *,
    design: str,
    url: str,
    key: str | None,
    concurrency: int,
    requests: int,
    mode: str,
    server_pid: int,
    simulator_pid: int,
    args: argparse.Namespace,
    workdir: Path,
    queue: Queue | None = None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """Drive one design at one level; the load generator's figures plus the server's.

    For the service, the level ends when its worker has delivered every mail it queued: the
    worker's CPU and the time that took are part of the level."""
    out = workdir / f"{design}-{mode}-{concurrency}.json"
    env = {**_base_env(workdir), "BENCH_API_KEY": key or ""}
    argv = [
        python(),
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--time-limit",
        str(args.level_time_limit),
        "--mode",
        mode,
        # Repeat runs share one interview per benchmark run, so the priming request primes;
        # distinct runs get a fresh tag per level from the load generator.
        *(["--tag", workdir.name] if mode == "repeat" else []),
        "--timeout",
        str(args.request_timeout),
        "--out",
        str(out),
    ]
    spy = _start_profiler(server_pid, profile_to) if profile_to else None
    rss_before = rss_mb(server_pid)
    api_cpu, worker_cpu = split_cpu(server_pid)
    cpu_sim = cpu_seconds(simulator_pid)
    sent_before = queue.sent() if queue else 0
    started = time.perf_counter()
    with MemorySampler(server_pid) as memory:
        subprocess.run(argv, env=env, cwd=ROOT, check=True, timeout=args.level_time_limit + 180)
    wall = time.perf_counter() - started
    api_cpu_level, worker_cpu_level = (
        a - b for a, b in zip(split_cpu(server_pid), (api_cpu, worker_cpu), strict=True)
    )
    cpu_sim = cpu_seconds(simulator_pid) - cpu_sim
    if spy is not None and profile_to is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        if profile_to.exists():
            print(f"where the service's time went ({profile_to}):", flush=True)
            print(profile.render(profile_to), flush=True)
    drain_s, left = queue.drain(timeout_s=args.drain_timeout) if queue else (0.0, 0)
    api_cpu_total, worker_cpu_total = (
        a - b for a, b in zip(split_cpu(server_pid), (api_cpu, worker_cpu), strict=True)
    )
    delivered = (queue.sent() - sent_before) if queue else 0
    # Memory is only judged on the service; the others need no time to settle.
    time.sleep(SETTLE_S if design.startswith("service") else 0.5)
    summary: dict[str, Any] = json.loads(out.read_text())
    ok = max(summary["ok"], 1)
    summary.update(
        design=design,
        concurrency=concurrency,
        mode=mode,
        server_rss_before_mb=round(rss_before, 1),
        server_rss_peak_mb=round(memory.peak_mb, 1),
        server_rss_after_mb=round(rss_mb(server_pid), 1),
        server_cpu_share=round(api_cpu_level / wall, 3),
        # CPU per answered request: the figure least disturbed by other load on the machine.
        # The API's own, in the level and the drain after it (where it idles).
        server_cpu_ms_per_request=round(1000 * api_cpu_total / ok, 2),
        worker_cpu_share=round(worker_cpu_level / wall, 3),
        worker_cpu_ms_per_mail=round(1000 * worker_cpu_total / delivered, 2) if delivered else None,
        mails_delivered=delivered,
        mails_left=left,
        drain_s=round(drain_s, 2) if queue else None,
        simulator_cpu_share=round(cpu_sim / wall, 3),
    )
    print(report.line(summary), flush=True)
    return summary


def _start_profiler(pid: int, target: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy", path=str(Path(python()).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (pip install py-spy): no profile", flush=True)
        return None
    child = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--gil",
            "--output",
            str(target),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the load starts
    return child


def machine() -> dict[str, Any]:
    """What the run ran on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "loadavg_before": os.getloadavg(),
    }


def _databases(
    args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack
) -> Callable[[str], str]:
    """A fresh database per design: a SQLite file, or a database on a throwaway cluster."""
    if args.database == "sqlite":
        return lambda design: f"sqlite+aiosqlite:///{workdir}/{design}.db"
    from tests.databases import fresh_postgres_database, start_cluster

    cluster = start_cluster()
    stack.callback(cluster.stop)
    return lambda design: stack.enter_context(fresh_postgres_database(cluster.dsn))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write results.json, results.txt and results.png."""
    args = parse_args(argv)
    # Ctrl-C and `kill` both stop every process the run started (also when started in the
    # background, where SIGINT is inherited as ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="scorer-bench-"))
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "llm_latency_s": args.llm_latency,
            "analyzer_latency_s": args.analyzer_latency,
            "levels": args.levels,
            "designs": args.designs,
            "memory_bound_mb": args.memory_bound_mb,
            "level_time_limit_s": args.level_time_limit,
            "service_env": args.service_env,
            "database": args.database,
        },
        "runs": [],
    }
    started = time.perf_counter()
    try:
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        with Processes(logs) as procs, contextlib.ExitStack() as stack:
            simulator, simulator_pid = start_simulator(procs, args, workdir)
            databases = _databases(args, workdir, stack)
            plan = [(d, args.levels) for d in args.designs]
            if "service" in args.designs and args.two_processes_level:
                # After the one-process service: two API processes and one worker.
                at = args.designs.index("service") + 1
                plan.insert(at, ("service_x2", [args.two_processes_level]))
            for design, levels in plan:
                database_url = databases(design)
                queue = Queue(database_url) if design.startswith("service") else None
                server, url, key = start_design(
                    procs,
                    design,
                    workdir=workdir,
                    simulator=simulator,
                    extra=args.service_env,
                    database_url=database_url,
                )
                common: dict[str, Any] = {
                    "design": design,
                    "url": url,
                    "key": key,
                    "server_pid": server.pid,
                    "simulator_pid": simulator_pid,
                    "args": args,
                    "workdir": workdir,
                    "queue": queue,
                }
                for level in levels:
                    requests = args.requests_per_level or DEFAULT_REQUESTS[design].get(
                        level, max(5 * level, 5)
                    )
                    profile = (
                        args.out / f"profile-service-c{level}.txt"
                        if design == "service" and level == args.profile
                        else None
                    )
                    results["runs"].append(
                        run_level(
                            concurrency=level,
                            requests=requests,
                            mode="distinct",
                            profile_to=profile,
                            **common,
                        )
                    )
                if design == "service" and args.cached_requests:
                    # One request first, so that a result cache has the answer.
                    run_level(concurrency=1, requests=1, mode="repeat", **common)
                    results["runs"].append(
                        run_level(
                            concurrency=args.cached_concurrency,
                            requests=args.cached_requests,
                            mode="repeat",
                            profile_to=(
                                args.out / "profile-service-cached.txt"
                                if args.profile_cached
                                else None
                            ),
                            **common,
                        )
                    )
                procs.stop(server)
    except KeyboardInterrupt:
        print("interrupted: every process this run started is stopped", flush=True)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    report.write(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
