"""A live service for the contract tests: `interview-scorer serve` and `simulate` as real
processes on loopback, a database of the run's backend, and an API key made by the CLI.

One service serves the package: the TypeScript client's end-to-end test, the browser test and
the fuzzer each make their own data, and none of them assumes an empty database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.migrate import upgrade
from tests.databases import fresh_postgres_database, postgres_mode
from tests.servers import free_port, serving, simulating


@dataclass(frozen=True)
class Live:
    """A running service and what a client needs to call it."""

    base_url: str
    api_key: str
    webhook_secret: str
    # The one origin CORS admits: the browser test serves its page there.
    page_origin: str
    page_port: int


@contextmanager
def _database(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if not postgres_mode():
        url = f"sqlite+aiosqlite:///{workdir / 'live.db'}"
        upgrade(url)
        yield url
        return
    server = request.getfixturevalue("postgres_server")
    with fresh_postgres_database(
        server, template=request.getfixturevalue("postgres_template")
    ) as url:
        yield url


def create_key(database_url: str, workdir: Path) -> tuple[str, str]:
    """A key with every scope and its webhook secret, from `interview-scorer api-keys`."""

    def cli(*args: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-m", "service", "api-keys", *args],
            cwd=workdir,
            env={**os.environ, "SCORER_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip().splitlines()

    created = cli("create", "contract-tests")
    key_id = created[0].split()[2]  # "created key <id> (...)"; the key is the last line
    return created[-1], cli("webhook-secret", key_id)[-1]


@pytest.fixture(scope="package")
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """`serve` with its worker and `simulate`, for the package's tests."""
    workdir = tmp_path_factory.mktemp("live")
    page_port = free_port()
    page_origin = f"http://127.0.0.1:{page_port}"
    with _database(request, workdir) as database_url, simulating(workdir=workdir) as simulator:
        api_key, secret = create_key(database_url, workdir)
        env = {
            "SCORER_LLM_BASE_URL": f"{simulator}/v1",
            "SCORER_PORTFOLIO_ANALYZER_URL": simulator,
            "SCORER_CORS_ORIGINS": page_origin,
            # The tests' webhook receivers listen on loopback.
            "SCORER_WEBHOOK_ALLOW_PRIVATE": "true",
        }
        with serving(database_url=database_url, workdir=workdir, env=env) as base_url:
            yield Live(base_url, api_key, secret, page_origin, page_port)
