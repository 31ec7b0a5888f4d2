"""Chaos under load, reduced: the run of `make chaos` (bench/chaos, docs/chaos.md) with fewer
requests in flight and shorter faults, on this pass's database: on SQLite in the SQLite pass, on
a PostgreSQL cluster of its own in the PostgreSQL pass (which it stops and starts: the session's
cluster is shared). The API and the worker run as processes, against Redis, an SMTP server and
the simulators, all on loopback; Redis is restarted, PostgreSQL stopped (PostgreSQL pass), SMTP
stopped, the worker and the API killed with SIGKILL, the LLM made to fail, the analyzer made to
hang. Then the same checks as `make chaos`: no 500, every 201 readable with the same body, every
mail delivered exactly once, every async job finished once, nothing stored for an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos.run import run_chaos
from bench.chaos.stack import REDUCED
from tests.cache.redis_server import find_redis
from tests.conftest import server_unavailable
from tests.databases import postgres_mode


# A minute or two on 2 cores; the drain alone is bounded at two minutes.
@pytest.mark.timeout(600)
def test_faults_under_load_lose_double_and_refuse_nothing(tmp_path: Path) -> None:
    if find_redis() is None:
        server_unavailable("redis-server is not installed")
    database = "postgresql" if postgres_mode() else "sqlite"
    try:
        result = run_chaos(profile=REDUCED, database=database, workdir=tmp_path)
    except RuntimeError as exc:
        if "initdb" in str(exc) or "pg_ctl" in str(exc):
            server_unavailable(f"PostgreSQL: {exc}")
        raise
    print(result.table())

    assert result.verdict.holds, result.table()
    # The faults struck: the run would pass idly if they did not.
    rows = {row.fault.split(":")[0].split(" ")[0]: row.by_status for row in result.rows}
    assert rows["API"]["refused"] > 0
    assert rows["analyzer"]["201 partial"] > 0
    if database == "postgresql":
        assert rows["PostgreSQL"]["503"] > 0
    assert result.verdict.figures["mails claimed more than once"] > 0
    assert result.verdict.figures["async jobs"] > 0
