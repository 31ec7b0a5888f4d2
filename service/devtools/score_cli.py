"""`interview-scorer score`: submit interview files to a running service, write the results."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

RESULT_SUFFIX = ".evaluation.json"
BAR_WIDTH = 30


class InputError(Exception):
    """The paths given hold no interview files."""


def interview_files(paths: list[Path]) -> list[Path]:
    """The interview files named, or found (*.json, not results) in the folders named."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.json") if not p.name.endswith(RESULT_SUFFIX))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"no such file or folder: {path}")
    if not files:
        raise InputError("no interview files (*.json) found")
    return files


def result_path(out: Path, source: Path) -> Path:
    """Where the evaluation of `source` is written."""
    return out / f"{source.stem}{RESULT_SUFFIX}"


@dataclass
class Progress:
    """A one-line progress bar on a terminal stream, redrawn with a carriage return."""

    total: int
    stream: TextIO
    done: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def advance(self, name: str, ok: bool) -> None:
        """Count one finished file and redraw."""
        self.done += 1
        if not ok:
            self.failed += 1
            self.failures.append(name)
        self.draw()

    def draw(self) -> None:
        """Redraw the bar."""
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = f"\r[{bar}] {self.done}/{self.total} done, {self.failed} failed"
        self.stream.write(line)
        self.stream.flush()


async def _score_one(
    client: httpx.AsyncClient, source: Path, *, poll_interval_s: float
) -> tuple[bool, Any]:
    """Submit one file, wait for its evaluation; (completed?, what to write)."""
    try:
        body = json.loads(await asyncio.to_thread(source.read_text, encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return False, {"error": f"cannot read {source.name}: {type(exc).__name__}"}
    response = await client.post("/v1/evaluations", json=body, headers={"Prefer": "respond-async"})
    if response.status_code not in (200, 201, 202):
        return False, _body(response)
    evaluation = response.json()
    location = response.headers.get("location", f"/v1/evaluations/{evaluation['id']}")
    while evaluation.get("status") == "pending":
        await asyncio.sleep(poll_interval_s)
        polled = await client.get(location)
        if polled.status_code != 200:
            return False, _body(polled)
        evaluation = polled.json()
    return evaluation.get("status") == "completed", evaluation


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"status": response.status_code, "detail": response.text[:500]}


async def score_files(
    paths: list[Path],
    *,
    url: str,
    api_key: str,
    out: Path,
    concurrency: int = 8,
    poll_interval_s: float = 1.0,
    stream: TextIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Score every file, `concurrency` at a time; 0 when all completed, 1 otherwise."""
    stream = stream or sys.stderr
    try:
        files = interview_files(paths)
    except InputError as exc:
        stream.write(f"interview-scorer: {exc}\n")
        return 2
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    progress = Progress(total=len(files), stream=stream)
    progress.draw()
    slots = asyncio.Semaphore(concurrency)

    async def run(client: httpx.AsyncClient, source: Path) -> None:
        async with slots:
            try:
                ok, result = await _score_one(client, source, poll_interval_s=poll_interval_s)
            except httpx.HTTPError as exc:
                ok, result = False, {"error": f"{type(exc).__name__}: {exc}"}
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        await asyncio.to_thread(result_path(out, source).write_text, text, encoding="utf-8")
        progress.advance(source.name, ok)

    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = httpx.Timeout(60.0, connect=10.0)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=timeout, transport=transport
    ) as client:
        await asyncio.gather(*(run(client, f) for f in files))
    stream.write("\n")
    completed = progress.done - progress.failed
    stream.write(f"{completed} completed, {progress.failed} failed; results in {out}/\n")
    for name in progress.failures:
        stream.write(f"  failed: {name}\n")
    return 1 if progress.failed else 0
