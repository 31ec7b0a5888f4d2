"""The README tells the truth: its local run works as written, its defaults are the service's,
its links lead somewhere, and it stays short."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.databases import postgres_mode
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    """The text of the README's `## heading` section, up to the next `## ` heading."""
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _prepared_checkout(workdir: Path) -> None:
    """A working directory like the top of a clone, as far as the blocks reach: the Makefile,
    pyproject.toml, examples/, and .venv: the suite's own, which make installed, so that `make
    install` finds it done (pyproject.toml is dated before it)."""
    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    if not stamp.exists():
        pytest.skip(f"the suite does not run from make's .venv ({venv} has no .installed)")
    for name in ("Makefile", "examples"):
        (workdir / name).symlink_to(ROOT / name)
    (workdir / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    before = stamp.stat().st_mtime - 60
    os.utime(workdir / "pyproject.toml", (before, before))
    (workdir / ".venv").symlink_to(venv)


def test_the_local_run_works_as_written(tmp_path: Path) -> None:
    """Every shell block of "Run it yourself", in one bash as a newcomer would type them, in a
    clean environment; only the two ports are changed to free ones, so that the test can run
    beside anything else. It scores an interview and leaves the follow-up mails in ./outbox/."""
    if postgres_mode():
        pytest.skip("the local run uses its own SQLite database: run once, in the SQLite pass")
    _prepared_checkout(tmp_path)
    blocks = shell_blocks(section("Run it yourself"))
    assert len(blocks) == 2, "the run, then the stop"
    api, simulator = free_port(), free_port()
    script = "\n".join(blocks).replace("8000", str(api)).replace("8900", str(simulator))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    # A failing line stops the run, and its background jobs go with it (they hold the pipes).
    stop_jobs = "trap 's=$?; kill $(jobs -p) 2>/dev/null || :; exit $s' EXIT"
    process = subprocess.Popen(
        ["bash", "-c", f"set -eo pipefail\n{stop_jobs}\n{script}\nwait"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=240)
    finally:
        # Whatever the blocks left running, if they failed half-way: this session is ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    evaluation = _printed_json(out)
    assert evaluation["status"] == "completed"
    assert evaluation["model"] == "simulated"
    assert evaluation["portfolio"]["status"] == "ok"
    assert isinstance(evaluation["overall_score"], float)
    assert [n["status"] for n in evaluation["notifications"]] == ["queued", "queued"]
    # The stop block stopped the worker after its round: both mails are there, and only they.
    mails = sorted(p.name for p in (tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 2
    assert mails[0] in out  # what `ls` showed the newcomer
    assert "Interview Scorer" in (tmp_path / "outbox" / mails[0]).read_text()


def _printed_json(out: str) -> dict[str, Any]:
    """The evaluation `python -m json.tool` printed: from a line `{` to the next line `}`."""
    lines = out.splitlines()
    start = lines.index("{")
    end = lines.index("}", start)
    value: dict[str, Any] = json.loads("\n".join(lines[start : end + 1]))
    return value


def test_the_configuration_table_shows_the_true_defaults() -> None:
    rows = re.findall(r"^\| `(SCORER_[A-Z_]+)` \| ([^|]+) \|", section("Configuration"), re.M)
    assert len(rows) >= 10
    for name, shown in rows:
        field = name.removeprefix("SCORER_").lower()
        default = Settings.model_fields[field].default
        if shown.strip() == "unset":
            assert default is None, name
        else:
            # As the service reads it from the environment.
            [value] = re.findall(r"`([^`]*)`", shown)
            given = Settings(_env_file=None, llm_api_key="sk-x", **{field: value})
            assert getattr(given, field) == default, name


def test_links_in_the_readme_and_docs_lead_to_files_that_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) < 200


def test_the_readme_cites_no_document_outside_the_repository() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for cited in ("DESIGN.md", "CONVENTIONS.md", "contracts/"):
            assert cited not in page.read_text(), f"{page.name} cites {cited}"
