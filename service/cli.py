"""The `interview-scorer` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from service.config import DatabaseSettings, Settings, SettingsError, load_settings


def _fail(message: str, code: int = 2) -> int:
    print(f"interview-scorer: {message}", file=sys.stderr)
    return code


def _ready_settings() -> Settings | int:
    """The settings, if valid and the database's migrations are current; else the exit code."""
    from service.migrate import current_revision, head_revision

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc))
    current = asyncio.run(current_revision(settings.database_url))
    if current != head_revision():
        return _fail(
            f"the database is at migration {current or 'none'}, not {head_revision()}: "
            "run `interview-scorer migrate` first"
        )
    return settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.logs import configure_logging
    from service.supervisor import WorkerSupervisor

    settings = _ready_settings()
    if isinstance(settings, int):
        return settings
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    # --workers, else SCORER_WORKERS from the environment or .env, like every other setting.
    workers = args.workers or settings.workers
    # Seen by every API process's settings: an in-process cache cannot be shared between them.
    os.environ["SCORER_WORKERS"] = str(workers)
    # The background worker is one more process whose metrics /metrics must add up.
    _prepare_metrics_dir(workers + (0 if args.no_worker else 1))
    supervisor = (
        None
        if args.no_worker
        else WorkerSupervisor(
            [sys.executable, "-m", "service", "worker"], niceness=settings.worker_niceness
        )
    )
    if supervisor is not None:
        supervisor.start()
    try:
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=workers,
            log_config=None,
            access_log=False,
            backlog=4096,
            timeout_graceful_shutdown=30,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from service.logs import configure_logging
    from service.worker import heartbeat_age_s, run_until_stopped

    if args.check:
        try:
            current = load_settings()
        except SettingsError as exc:
            return _fail(str(exc))
        if current.worker_heartbeat_file is None:
            return _fail("--check needs SCORER_WORKER_HEARTBEAT_FILE")
        age = heartbeat_age_s(current)
        if age is None or age > args.max_age:
            return _fail(f"no worker heartbeat within {args.max_age:g} s", 1)
        return 0
    settings = _ready_settings()
    if isinstance(settings, int):
        return settings
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run_until_stopped(settings))
    return 0


def _prepare_metrics_dir(workers: int) -> None:
    # Several workers share their metrics through files (prometheus-client's multiprocess
    # mode): the directory must exist before they start, and hold nothing of a previous run.
    # prometheus_client is not imported here: it picks its mode at import, in each worker.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        if workers == 1:
            return
        import tempfile

        directory = tempfile.mkdtemp(prefix="interview-scorer-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from pathlib import Path

    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):
        stale.unlink()


def _openapi(args: argparse.Namespace) -> int:
    import json

    from service.main import openapi_document

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from service.migrate import head_revision, upgrade

    url = DatabaseSettings().database_url
    print(f"migrating to {head_revision()} ...", flush=True)
    upgrade(url)
    print("the database is current", flush=True)
    return 0


async def _api_keys(args: argparse.Namespace) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    from service.auth import service as keys
    from service.auth.models import DEFAULT_TENANT
    from service.database import create_sessionmaker

    engine = create_async_engine(DatabaseSettings().database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            if args.keys_command == "create":
                try:
                    row, key = await keys.create_api_key(
                        session,
                        name=args.name,
                        scopes=args.scopes,
                        tenant=args.tenant or DEFAULT_TENANT,
                    )
                except ValueError as exc:
                    return _fail(str(exc))
                print(
                    f"created key {row.id} ({row.name}, tenant: {row.tenant}, scopes: {row.scopes})"
                )
                # Before the key, which stays the last line for scripts that take it.
                print(f"webhook signing secret: {row.webhook_secret}")
                print("the key is shown once; store it now:")
                print(key)
            elif args.keys_command == "list":
                rows = await keys.list_api_keys(session)
                print(
                    f"{'id':36}  {'prefix':10}  {'name':20}  {'tenant':16}  {'scopes':18}  status"
                )
                for row in rows:
                    state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                    name, tenant = row.name[:20], row.tenant[:16]
                    print(
                        f"{row.id:36}  {row.prefix:10}  {name:20}  {tenant:16}  "
                        f"{row.scopes:18}  {state}"
                    )
            elif args.keys_command == "webhook-secret":
                found = await keys.find_key(session, key=args.key)
                if found is None:
                    return _fail(f"no key {args.key}", 1)
                print(found.webhook_secret)
            else:
                revoked = await keys.revoke_api_key(session, key=args.key)
                if revoked is None:
                    return _fail(f"no key {args.key}", 1)
                print(f"revoked key {revoked.id} ({revoked.name})")
                await _announce_revocation(revoked.id)
    finally:
        await engine.dispose()
    return 0


async def _announce_revocation(key_id: str) -> None:
    """Tell the running processes over Redis, where configured; else their cache expires it."""
    from redis.asyncio import Redis

    from service.auth.dependencies import REVOCATIONS_CHANNEL

    url = DatabaseSettings().redis_url
    if not url:
        return
    redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await redis.publish(REVOCATIONS_CHANNEL, key_id)
    except Exception as exc:
        print(
            f"could not announce the revocation over Redis ({type(exc).__name__}): "
            "running processes stop accepting the key within SCORER_API_KEY_CACHE_S"
        )
    finally:
        await redis.aclose()


def _simulate(args: argparse.Namespace) -> int:
    from service.devtools.simulator import SimulatorConfig, run_simulator

    run_simulator(
        SimulatorConfig(
            llm_latency_s=args.llm_latency,
            analyzer_latency_s=args.analyzer_latency,
            jitter_s=args.jitter,
            failure_rate=args.failure_rate,
            rate_limit_rate=args.rate_limit_rate,
            analyzer_token=args.analyzer_token,
            json_schema=not args.no_json_schema,
        ),
        host=args.host,
        port=args.port,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from service.devtools.demo import run_demo

    return asyncio.run(run_demo(examples=args.examples, workdir=args.workdir))


def _score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from service.devtools.score_cli import score_files

    if not args.api_key:
        return _fail("an API key is required: --api-key or SCORER_API_KEY")
    return asyncio.run(
        score_files(
            [Path(p) for p in args.paths],
            url=args.url,
            api_key=args.api_key,
            out=Path(args.out),
            concurrency=args.concurrency,
            poll_interval_s=args.poll_interval,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="interview-scorer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API, and a background worker beside it")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="API processes; default: SCORER_WORKERS (environment or .env), else 1",
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="start no background worker (run `interview-scorer worker` on its own instead)",
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="run a background worker: mail, webhooks, async evaluations and batches"
    )
    worker.add_argument(
        "--check",
        action="store_true",
        help="do not run: exit 0 if a running worker reached its database within --max-age "
        "seconds (its SCORER_WORKER_HEARTBEAT_FILE), 1 if not; for container health checks",
    )
    worker.add_argument("--max-age", type=float, default=30.0, metavar="S")
    worker.set_defaults(run=_worker)

    commands.add_parser("migrate", help="apply the database migrations").set_defaults(run=_migrate)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", "-o", default="openapi.json", help="a file, or - for stdout")
    openapi.set_defaults(run=_openapi)

    api_keys = commands.add_parser("api-keys", help="manage API keys")
    key_commands = api_keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key (printed once)")
    create.add_argument("name")
    create.add_argument(
        "--scopes",
        nargs="+",
        default=["write", "read", "delete"],
        choices=["write", "read", "delete"],
    )
    create.add_argument(
        "--tenant",
        help="whose evaluations the key sees; a key never sees another tenant's "
        "(default: the one default tenant)",
    )
    key_commands.add_parser("list", help="list keys")
    secret = key_commands.add_parser(
        "webhook-secret", help="show the secret that signs a key's webhooks"
    )
    secret.add_argument("key", help="the key itself, its id or its prefix")
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="the key itself, its id or its prefix")
    api_keys.set_defaults(run=lambda a: asyncio.run(_api_keys(a)))

    simulate = commands.add_parser("simulate", help="run the simulated LLM and analyzer")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8900)
    simulate.add_argument("--llm-latency", type=float, default=1.0, metavar="S")
    simulate.add_argument("--analyzer-latency", type=float, default=0.5, metavar="S")
    simulate.add_argument("--jitter", type=float, default=0.0, metavar="S")
    simulate.add_argument("--failure-rate", type=float, default=0.0)
    simulate.add_argument("--rate-limit-rate", type=float, default=0.0)
    simulate.add_argument("--analyzer-token", default=None)
    simulate.add_argument(
        "--no-json-schema",
        action="store_true",
        help="answer 400 to response_format json_schema, like servers without structured output",
    )
    simulate.set_defaults(run=_simulate)

    demo = commands.add_parser("demo", help="score the sample interviews end to end")
    demo.add_argument("--examples", default="examples", help="folder of sample interviews")
    demo.add_argument("--workdir", default=".demo", help="where the demo's database and mails go")
    demo.set_defaults(run=_demo)

    score = commands.add_parser("score", help="score interview files with a running service")
    score.add_argument("paths", nargs="+", metavar="FILE.json|DIR")
    score.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    score.add_argument(
        "--api-key", default=os.environ.get("SCORER_API_KEY"), help="default: $SCORER_API_KEY"
    )
    score.add_argument("--out", default="evaluations", help="folder for <name>.evaluation.json")
    score.add_argument("--concurrency", type=int, default=8, help="interviews in flight")
    score.add_argument("--poll-interval", type=float, default=1.0, metavar="S")
    score.set_defaults(run=_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; its exit status."""
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result
