"""The benchmark's report: a table, the JSON of every figure, a chart, and the targets checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "service": "service",
    "service_x2": "service, 2 API processes",
    "floor": "floor",
    "naive_async": "naive async",
    "sync": "sequential sync",
}
# The loadgen is not the bottleneck while it uses under this share of one core.
LOADGEN_CPU_LIMIT = 0.8


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def line(run: dict[str, Any], floor: dict[str, Any] | None = None) -> str:
    """One row of the table; `floor` is the floor's run at the same level, for the ratio."""
    name = LABELS.get(run["design"], run["design"])
    if run["mode"] == "repeat":
        name += f" (repeat, {run['cached']}/{run['ok']} cached)"
    ratio = None
    if floor and floor["throughput_rps"] and run["design"].startswith("service"):
        ratio = run["throughput_rps"] / floor["throughput_rps"]
    return (
        f"{name:<40} {run['concurrency']:>5} {run['requests']:>6} "
        f"{run['throughput_rps']:>8,.1f} {_num(ratio, '.2f'):>5} {_ms(run['p50_s']):>7} "
        f"{_ms(run['p95_s']):>7} {_ms(run['p99_s']):>7} {run['errors']:>6} "
        f"{run['server_rss_peak_mb']:>7,.0f} "
        f"{run['server_cpu_share']:>5.2f} {run.get('worker_cpu_share', 0):>5.2f} "
        f"{run['simulator_cpu_share']:>5.2f} {run['loadgen_cpu_share']:>5.2f} "
        f"{run.get('server_cpu_ms_per_request', 0):>7.2f} "
        f"{_num(run.get('worker_cpu_ms_per_mail'), '.2f'):>6} "
        f"{_num(run.get('drain_s'), '.1f'):>6}"
    )


HEADER = (
    f"{'design':<40} {'conc.':>5} {'reqs':>6} {'req/s':>8} {'/flr':>5} {'p50 ms':>7} "
    f"{'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'peak MB':>7} "
    f"{'api':>5} {'wrk':>5} {'sim':>5} {'gen':>5} {'API ms':>7} {'ms/mail':>6} {'drain':>6}"
)


def table(results: dict[str, Any]) -> str:
    """The runs as a text table; srv/sim/gen are CPU used in cores, CPU ms per answered request."""
    rows = [HEADER, "-" * len(HEADER)]
    for run in results["runs"]:
        floor = _find(results, "floor", run["concurrency"]) if run["mode"] == "distinct" else None
        rows.append(line(run, floor))
    return "\n".join(rows)


def _find(results: dict[str, Any], design: str, level: int, mode: str = "distinct") -> Any:
    return next(
        (
            r
            for r in results["runs"]
            if r["design"] == design and r["concurrency"] == level and r["mode"] == mode
        ),
        None,
    )


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what was required, what was measured, and whether it held."""
    config = results["config"]
    slowest = max(config["llm_latency_s"], config["analyzer_latency_s"])
    checks: list[dict[str, Any]] = []

    def check(name: str, required: str, measured: str, ok: bool) -> None:
        checks.append({"target": name, "required": required, "measured": measured, "met": ok})

    one = _find(results, "service", 1)
    if one and one["p50_s"] is not None:
        check(
            "c=1 p50",
            f"<= {(slowest + 0.025) * 1000:.0f} ms",
            f"{one['p50_s'] * 1000:.0f} ms",
            one["p50_s"] <= slowest + 0.025,
        )
    hundred = _find(results, "service", 100)
    if hundred:
        need = 0.9 * 100 / slowest
        check(
            "c=100 throughput",
            f">= {need:.0f} req/s",
            f"{hundred['throughput_rps']:.0f} req/s",
            hundred["throughput_rps"] >= need,
        )
    top = _find(results, "service", 1000)
    floor = _find(results, "floor", 1000)
    if top:
        check("c=1000 errors", "0", str(top["errors"]), top["errors"] == 0)
        if floor and floor["throughput_rps"] > 0:
            ratio = top["throughput_rps"] / floor["throughput_rps"]
            check(
                "c=1000 vs the floor",
                ">= 0.8 x",
                f"{top['throughput_rps']:.0f} / {floor['throughput_rps']:.0f} = {ratio:.2f} x",
                ratio >= 0.8,
            )
        check(
            "API CPU per fresh request (c=1000)",
            "<= 3.5 ms",
            f"{top['server_cpu_ms_per_request']:.2f} ms",
            top["server_cpu_ms_per_request"] <= 3.5,
        )
        per_mail = top.get("worker_cpu_ms_per_mail")
        if per_mail is not None:
            check("worker CPU per delivered mail", "<= 1 ms", f"{per_mail:.2f} ms", per_mail <= 1)
        check(
            "every mail of c=1000 delivered",
            "0 left",
            f"{top.get('mails_left', 0)} left after {top.get('drain_s', 0):.1f} s of drain",
            not top.get("mails_left"),
        )
        check(
            "c=1000 peak RSS of the API",
            "<= 250 MB",
            f"{top['server_rss_peak_mb']:.0f} MB",
            top["server_rss_peak_mb"] <= 250,
        )
    two = _find(results, "service_x2", 1000)
    if top and two and top["throughput_rps"] > 0:
        ratio = two["throughput_rps"] / top["throughput_rps"]
        check(
            "--workers 2 at c=1000",
            ">= 1.4 x one process",
            f"{two['throughput_rps']:.0f} / {top['throughput_rps']:.0f} = {ratio:.2f} x",
            ratio >= 1.4,
        )
    repeat = next((r for r in results["runs"] if r["mode"] == "repeat"), None)
    if repeat:
        share = repeat["cached"] / max(repeat["ok"], 1)
        seen = f"{share:.1%} cached" + ("" if share >= 0.99 else ": not the cached path")
        check(
            "cached repeat",
            ">= 1000 req/s",
            f"{repeat['throughput_rps']:.0f} req/s ({seen})",
            repeat["throughput_rps"] >= 1000,
        )
        check(
            "API CPU per cached request",
            "<= 1 ms",
            f"{repeat['server_cpu_ms_per_request']:.2f} ms",
            repeat["server_cpu_ms_per_request"] <= 1,
        )
    busiest = max((r["loadgen_cpu_share"] for r in results["runs"]), default=0.0)
    check(
        "load generator not the bottleneck",
        f"< {LOADGEN_CPU_LIMIT:.0%} of a core",
        f"{busiest:.0%} at most",
        busiest < LOADGEN_CPU_LIMIT,
    )
    return checks


def chart(results: dict[str, Any], path: Path) -> None:
    """Throughput and p95 latency against concurrency, one line per design."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    config = results["config"]
    slowest = max(config["llm_latency_s"], config["analyzer_latency_s"])
    levels = sorted({r["concurrency"] for r in results["runs"] if r["mode"] == "distinct"})
    if levels:
        ideal = [level / slowest for level in levels]
        left.plot(levels, ideal, linestyle="--", color="grey", label="concurrency / max latency")
    for design in results["config"]["designs"]:
        runs = sorted(
            (r for r in results["runs"] if r["design"] == design and r["mode"] == "distinct"),
            key=lambda r: r["concurrency"],
        )
        if not runs:
            continue
        xs = [r["concurrency"] for r in runs]
        label = LABELS.get(design, design)
        left.plot(xs, [r["throughput_rps"] for r in runs], marker="o", label=label)
        right.plot(xs, [(r["p95_s"] or 0) * 1000 for r in runs], marker="o", label=label)
    for axis, title, unit in ((left, "Throughput", "requests / s"), (right, "p95 latency", "ms")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle(
        f"Interview Scorer, LLM {config['llm_latency_s']} s + analyzer "
        f"{config['analyzer_latency_s']} s (simulated), {results['machine']['cores']} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    """Print the table and targets; write results.json, results.txt and results.png."""
    results["targets"] = targets(results)
    lines = [table(results), "", "Targets:"]
    lines.extend(
        f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']} "
        f"(required {t['required']})"
        for t in results["targets"]
    )
    lines.append(
        "\n/flr: throughput over the floor's at the same level; api/wrk/sim/gen: CPU of the API "
        "process(es), the service's worker, the simulator and the load generator, in cores; "
        "API ms: the API's CPU per answered request; ms/mail: the worker's CPU per delivered "
        "mail; drain: seconds after the level until the worker had delivered every mail. "
        f"Run took {results['duration_s']} s on {results['machine']['cores']} cores."
    )
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    (out / "results.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, out / "results.png")
    print(f"\nwrote {out}/results.json, results.txt and results.png", flush=True)
