"""`interview-scorer score`: files in, evaluations out, through the service's HTTP API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import respx
from fastapi import FastAPI

from service.cli import main
from service.devtools.score_cli import score_files
from tests.conftest import completion, scores_content
from tests.jobs.helpers import CHAT, numbered

GOOD = completion(scores_content({"technical_depth": 4, "communication": 3}))


def write(folder: Path, name: str, content: object) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


async def test_scores_a_folder_and_writes_one_evaluation_per_file(
    app: FastAPI, auth: dict[str, str], upstream: respx.MockRouter, tmp_path: Path
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    inputs = tmp_path / "interviews"
    inputs.mkdir()
    for i in range(5):
        write(inputs, f"cand-{i}.json", numbered(i))
    write(inputs, "old.evaluation.json", {"ignored": True})
    stderr = io.StringIO()

    code = await score_files(
        [inputs],
        url="http://scorer.test",
        api_key=auth["Authorization"].removeprefix("Bearer "),
        out=tmp_path / "out",
        concurrency=2,
        poll_interval_s=0.01,
        stream=stderr,
        transport=httpx.ASGITransport(app=app),
    )

    assert code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"cand-{i}.evaluation.json" for i in range(5)]
    first = json.loads((tmp_path / "out" / "cand-0.evaluation.json").read_text())
    assert first["status"] == "completed"
    assert first["candidate"]["name"] == "Candidate 0"
    assert first["overall_score"] is not None
    assert "\r[" in stderr.getvalue()
    assert "5/5 done, 0 failed" in stderr.getvalue()
    assert stderr.getvalue().rstrip().endswith(f"5 completed, 0 failed; results in {tmp_path}/out/")


async def test_failures_are_written_and_counted_and_the_exit_status_says_so(
    app: FastAPI, auth: dict[str, str], upstream: respx.MockRouter, tmp_path: Path
) -> None:
    upstream.post(CHAT).mock(return_value=GOOD)
    good = write(tmp_path, "good.json", numbered(0))
    invalid = numbered(1)
    invalid["transcript"] = []
    bad = write(tmp_path, "bad.json", invalid)
    broken = write(tmp_path, "broken.json", "{not json")
    stderr = io.StringIO()

    code = await score_files(
        [good, bad, broken],
        url="http://scorer.test",
        api_key=auth["Authorization"].removeprefix("Bearer "),
        out=tmp_path / "out",
        poll_interval_s=0.01,
        stream=stderr,
        transport=httpx.ASGITransport(app=app),
    )

    assert code == 1
    problem = json.loads((tmp_path / "out" / "bad.evaluation.json").read_text())
    assert problem["status"] == 422
    assert problem["errors"][0]["field"] == "transcript"
    assert "JSONDecodeError" in (tmp_path / "out" / "broken.evaluation.json").read_text()
    assert "1 completed, 2 failed" in stderr.getvalue()
    assert "failed: bad.json" in stderr.getvalue()


def test_the_command_needs_an_api_key_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCORER_API_KEY", raising=False)
    assert main(["score", str(tmp_path)]) == 2
    assert "API key is required" in capsys.readouterr().err

    assert main(["score", str(tmp_path / "missing.json"), "--api-key", "k"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
