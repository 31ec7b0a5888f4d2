"""The benchmark's report: a table, the JSON of every figure, a chart, and the targets checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {"service": "service", "naive_async": "naive async", "sync": "sequential sync"}
# The loadgen is not the bottleneck while it uses under this share of one core.
LOADGEN_CPU_LIMIT = 0.8


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def line(run: dict[str, Any]) -> str:
    """One row of the table."""
    name = LABELS.get(run["design"], run["design"])
    if run["mode"] == "repeat":
        name += f" (repeat, {run['cached']}/{run['ok']} cached)"
    return (
        f"{name:<36} {run['concurrency']:>6} {run['requests']:>6} "
        f"{run['throughput_rps']:>9,.1f} {_ms(run['p50_s']):>7} {_ms(run['p95_s']):>7} "
        f"{_ms(run['p99_s']):>7} {run['errors']:>6} {run['server_rss_before_mb']:>7,.0f} "
        f"{run['server_rss_peak_mb']:>7,.0f} {run['server_rss_after_mb']:>7,.0f} "
        f"{run['server_cpu_share']:>5.2f} {run['simulator_cpu_share']:>5.2f} "
        f"{run['loadgen_cpu_share']:>5.2f} {run.get('server_cpu_ms_per_request', 0):>7.1f}"
    )


HEADER = (
    f"{'design':<36} {'conc.':>6} {'reqs':>6} {'req/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
    f"{'p99 ms':>7} {'errors':>6} {'RSS0 MB':>7} {'peak MB':>7} {'after':>7} "
    f"{'srv':>5} {'sim':>5} {'gen':>5} {'CPU ms':>7}"
)


def table(results: dict[str, Any]) -> str:
    """The runs as a text table; srv/sim/gen are CPU used in cores, CPU ms per answered request."""
    rows = [HEADER, "-" * len(HEADER)]
    rows.extend(line(run) for run in results["runs"])
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
    """Each target of the issue: what was required, what was measured, and whether it held."""
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
    if top:
        check("c=1000 errors", "0", str(top["errors"]), top["errors"] == 0)
        sync = _find(results, "sync", 1000)
        if sync and sync["throughput_rps"] > 0:
            ratio = top["throughput_rps"] / sync["throughput_rps"]
            check("c=1000 vs sync", ">= 15x", f"{ratio:.1f}x", ratio >= 15)
        bound = config["memory_bound_mb"]
        check(
            "c=1000 peak RSS",
            f"<= {bound:.0f} MB",
            f"{top['server_rss_peak_mb']:.0f} MB",
            top["server_rss_peak_mb"] <= bound,
        )
        growth = top["server_rss_peak_mb"] - top["server_rss_before_mb"]
        kept = top["server_rss_after_mb"] - top["server_rss_before_mb"]
        check(
            "c=1000 RSS comes back",
            "after - before <= half the growth",
            f"{kept:+.0f} of {growth:+.0f} MB",
            kept <= max(growth / 2, 16),
        )
    repeat = next((r for r in results["runs"] if r["mode"] == "repeat"), None)
    if top and repeat:
        # What is kept after c=1000 is reused by the next run, not added to: no leak.
        check(
            "no growth after c=1000",
            f"<= {top['server_rss_peak_mb']:.0f} MB + 16",
            f"{repeat['server_rss_peak_mb']:.0f} MB in the next run",
            repeat["server_rss_peak_mb"] <= top["server_rss_peak_mb"] + 16,
        )
    if repeat:
        share = repeat["cached"] / max(repeat["ok"], 1)
        seen = f"{share:.1%} cached" + ("" if share >= 0.99 else ": not the cached path")
        check(
            "cached repeat",
            ">= 1000 req/s",
            f"{repeat['throughput_rps']:.0f} req/s ({seen})",
            repeat["throughput_rps"] >= 1000,
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
        f"\nsrv/sim/gen: CPU of the server, simulator and load generator, in cores; CPU ms: the "
        f"server's CPU per answered request. "
        f"Run took {results['duration_s']} s on {results['machine']['cores']} cores."
    )
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    (out / "results.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, out / "results.png")
    print(f"\nwrote {out}/results.json, results.txt and results.png", flush=True)
