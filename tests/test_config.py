"""Settings: a missing or wrong setting stops start-up with one line naming the variable."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.config import SettingsError, load_settings
from tests.servers import metric_processes, serving


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SCORER_LLM_API_KEY", "OPENAI_API_KEY", "SCORER_LLM_PROVIDER", "SCORER_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_missing_llm_key_names_the_variable() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value).startswith("SCORER_LLM_API_KEY")
    assert "\n" not in str(error.value)


def test_openai_api_key_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-var")
    settings = load_settings()
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-from-openai-var"


def test_simulated_provider_needs_no_key_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_LLM_PROVIDER", "simulated")
    settings = load_settings()
    assert settings.reported_model == "simulated"
    assert settings.effective_llm_base_url == "http://127.0.0.1:8900/v1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCORER_LLM_TIMEOUT_S", "soon"),
        ("SCORER_SMTP_TLS", "maybe"),
        ("SCORER_DATABASE_URL", "mysql://x"),
        ("SCORER_PORTFOLIO_WEIGHT", "1.5"),
    ],
)
def test_wrong_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("SCORER_LLM_PROVIDER", "simulated")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value).startswith(name)


def test_settings_come_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SCORER_LLM_PROVIDER=simulated\nSCORER_LLM_MODEL=m-from-file\n")
    assert load_settings().llm_model == "m-from-file"


def test_serve_refuses_to_start_with_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SCORER_LLM_TIMEOUT_S": "soon"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("interview-scorer: SCORER_")


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "SCORER_LLM_PROVIDER": "simulated",
            "SCORER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'new.db'}",
        },
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "run `interview-scorer migrate` first" in result.stderr


def test_serve_takes_its_process_count_from_dotenv(database_url: str, tmp_path: Path) -> None:
    """SCORER_WORKERS in .env is read like every other setting (it once was read only from the
    process environment). Each process of serve writes its own metric files: two API
    processes and the background worker make three."""
    (tmp_path / ".env").write_text("SCORER_WORKERS=2\n")
    shared = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}

    with serving(database_url=database_url, workdir=tmp_path, workers=None, env=env):
        deadline = time.monotonic() + 30
        while len(processes := metric_processes(shared)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)

    assert len(processes) == 3, processes
