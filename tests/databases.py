"""Throwaway databases for the suite: SQLite files, or databases on a test PostgreSQL cluster.

The suite runs on SQLite by default and on PostgreSQL with SCORER_TEST_DATABASE=postgresql:
then a cluster is started once per session with initdb and pg_ctl on a free loopback port
(or the server named by SCORER_TEST_POSTGRES_URL is used), and every test gets a database of
its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from tests.servers import free_port

DATABASE_ENV = "SCORER_TEST_DATABASE"
POSTGRES_URL_ENV = "SCORER_TEST_POSTGRES_URL"


def postgres_mode() -> bool:
    """Whether this run of the suite is against PostgreSQL."""
    return os.environ.get(DATABASE_ENV, "sqlite").lower() in ("postgresql", "postgres", "pg")


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster; `dsn` reaches its maintenance database as a superuser."""

    dsn: str
    datadir: Path | None = None
    as_user: list[str] | None = None
    options: str = ""

    def _pg_ctl(self, *args: str, check: bool) -> None:
        assert self.datadir is not None, "a cluster started by start_cluster"
        done = subprocess.run(
            [*(self.as_user or []), str(_pg_bin("pg_ctl")), "-D", str(self.datadir), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {done.stderr.strip()[-500:]}")

    def halt(self) -> None:
        """Stop the server, every connection cut, keeping its data. Fast, not immediate: this
        cluster commits asynchronously, and an immediate stop could lose acknowledged commits
        that a production server (synchronous_commit on) would keep."""
        self._pg_ctl("-m", "fast", "-w", "stop", check=True)

    def resume(self) -> None:
        """Start the halted server again on the same port."""
        log = str(self.datadir.parent / "server.log") if self.datadir else ""
        self._pg_ctl("-o", self.options, "-l", log, "-w", "-t", "60", "start", check=True)

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self.datadir is None:
            return
        self._pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb and pg_ctl start on a free loopback port; RuntimeError saying why it could not."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="scorer-pg-"))
    # initdb refuses to run as root: run the server as the postgres user the package creates.
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no postgres user") from None
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    datadir = root / "data"
    port = free_port()
    init = subprocess.run(
        [*as_user, initdb, "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-sync", "--locale=C"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    start = subprocess.run(
        [*as_user, pg_ctl, "-D", str(datadir), "-o", options, "-l", str(root / "server.log"),
         "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if start.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-500:]}")
    return Cluster(
        dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        datadir=datadir,
        as_user=as_user,
        options=options,
    )


def with_database(dsn: str, database: str, *, driver: str = "postgresql") -> str:
    """`dsn` naming another database (and driver)."""
    parts = urlsplit(dsn)
    return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_postgres_database(dsn: str, *, template: str | None = None) -> Iterator[str]:
    """A new database on the server at `dsn` (empty, or a copy of `template`), as an async
    SQLAlchemy URL; dropped after."""
    name = f"t_{uuid.uuid4().hex}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_execute(dsn, f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield with_database(dsn, name, driver="postgresql+asyncpg")
    finally:
        asyncio.run(_execute(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
