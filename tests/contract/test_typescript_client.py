"""The TypeScript client (clients/typescript), compiled, run by node's own test runner against
a live service: its unit tests and its end-to-end test (clients/typescript/test/e2e.test.ts)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import server_unavailable
from tests.contract.conftest import Live

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"


def node_and_npm() -> tuple[str, str]:
    """The node and npm executables; the test is skipped (failed in CI) without them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        server_unavailable("node and npm are not installed (apt-get install nodejs npm)")
        raise AssertionError
    return node, npm


@pytest.fixture(scope="package")
def compiled_client() -> Path:
    """The client built with tsc from clients/typescript (its packages installed by
    `make client-deps`, which `make test` runs)."""
    _, npm = node_and_npm()
    if not (CLIENT / "node_modules").is_dir():
        pytest.fail("clients/typescript/node_modules is missing: run `make client-deps`")
    build = subprocess.run(
        [npm, "run", "build"], cwd=CLIENT, capture_output=True, text=True, timeout=600, check=False
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return CLIENT / "dist"


def test_the_typescript_client_against_a_live_service(live: Live, compiled_client: Path) -> None:
    node, _ = node_and_npm()
    tests = sorted(str(p) for p in (compiled_client / "test").glob("*.test.js"))
    assert any(t.endswith("e2e.test.js") for t in tests), tests
    env = {
        **os.environ,
        "SCORER_URL": live.base_url,
        "SCORER_API_KEY": live.api_key,
        "SCORER_WEBHOOK_SECRET": live.webhook_secret,
    }

    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *tests],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Nothing skipped: the end-to-end suite ran against the service, not around it.
    assert "# SKIP" not in output, output
    counts = dict(re.findall(r"^# (pass|fail|cancelled|todo) (\d+)$", output, re.M))
    assert counts["fail"] == counts["cancelled"] == counts["todo"] == "0", output
    assert int(counts["pass"]) > 0, output


def test_the_documented_example_is_the_one_make_lint_compiles() -> None:
    example = (CLIENT / "examples" / "score.ts").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "frontend.md").read_text(encoding="utf-8")

    assert f"```ts\n{example}```" in docs
