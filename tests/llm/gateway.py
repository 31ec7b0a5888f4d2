"""A real third-party gateway in front of the simulator: the LiteLLM proxy, in a virtualenv of
its own, routing one model to `interview-scorer simulate` and another to a simulator that
refuses json_schema (`--no-json-schema`).

LiteLLM's proxy pins much of what the service also uses (fastapi, starlette, pydantic, httpx2,
uvloop...), so it cannot share the service's environment. It is installed from PyPI, at the
version below, into `.cache/litellm-<version>/` under the repository (git-ignored), the first
time a test needs it: a minute or two once, nothing after. `interview-scorer simulate` serves
as the model behind it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port

LITELLM = "litellm[proxy]==1.108.7"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / f"litellm-{LITELLM.rpartition('==')[2]}"
MODEL = "scorer-test-model"
# Routed to a simulator that answers 400 to json_schema, as servers without structured output.
JSON_MODE_MODEL = "scorer-test-json-mode"
STARTUP_S = 90.0


class GatewayUnavailable(Exception):
    """The proxy could not be installed or started here; the message says why."""


def install() -> Path:
    """The `litellm` command of the proxy's virtualenv, installed first if need be."""
    command = VENV / "bin" / "litellm"
    stamp = VENV / ".installed"
    if stamp.exists():
        return command
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", LITELLM],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise GatewayUnavailable(f"cannot install {LITELLM}: {' / '.join(tail)}")
    stamp.touch()
    return command


@dataclass(frozen=True)
class Gateway:
    """The simulator and the proxy in front of it, both on loopback."""

    simulator_url: str  # the simulator's OpenAI-compatible base URL (…/v1)
    analyzer_url: str  # the simulator's portfolio analyzer
    proxy_url: str  # the proxy's OpenAI-compatible base URL (…/v1)
    master_key: str  # what the proxy demands, and so the service's LLM key
    model: str  # the model name the proxy routes to the simulator
    json_mode_model: str  # the one it routes to a simulator without json_schema


@contextmanager
def running(workdir: Path) -> Iterator[Gateway]:
    """`interview-scorer simulate` and the LiteLLM proxy routing to it, until the block ends."""
    command = install()
    simulator_port, plain_port, proxy_port = free_port(), free_port(), free_port()
    simulator_url = f"http://127.0.0.1:{simulator_port}/v1"
    master_key = "sk-gateway-test"
    config = workdir / "litellm.yaml"
    routes = {MODEL: simulator_url, JSON_MODE_MODEL: f"http://127.0.0.1:{plain_port}/v1"}
    config.write_text(
        "model_list:\n"
        + "".join(
            f"  - model_name: {name}\n"
            "    litellm_params:\n"
            f"      model: openai/{name}\n"
            f"      api_base: {url}\n"
            "      api_key: simulator-needs-none\n"
            for name, url in routes.items()
        )
        + "litellm_settings:\n  telemetry: false\n"
    )
    environment = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        # The proxy would fetch its model price list from the internet at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    simulate = [sys.executable, "-m", "service", "simulate", "--llm-latency", "0"]
    simulate += ["--analyzer-latency", "0"]
    proxy = [str(command), "--config", str(config), "--host", "127.0.0.1"]
    proxy += ["--port", str(proxy_port)]
    with (
        _process(
            [*simulate, "--port", str(simulator_port)], workdir / "simulator.log", environment
        ) as simulating,
        _process(
            [*simulate, "--port", str(plain_port), "--no-json-schema"],
            workdir / "simulator-without-json-schema.log",
            environment,
        ) as plain,
        _process(proxy, workdir / "litellm.log", environment) as proxying,
    ):
        _wait_for(f"http://127.0.0.1:{simulator_port}/healthz", simulating)
        _wait_for(f"http://127.0.0.1:{plain_port}/healthz", plain)
        _wait_for(f"http://127.0.0.1:{proxy_port}/health/liveliness", proxying)
        yield Gateway(
            simulator_url=simulator_url,
            analyzer_url=f"http://127.0.0.1:{simulator_port}",
            proxy_url=f"http://127.0.0.1:{proxy_port}/v1",
            master_key=master_key,
            model=MODEL,
            json_mode_model=JSON_MODE_MODEL,
        )


@contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[Started]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Started(process, log)
        finally:
            # Its own session: the group holds whatever it started, and nothing else.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass(frozen=True)
class Started:
    """A started server process and its log."""

    process: subprocess.Popen[bytes]
    log: Path


def _wait_for(url: str, started: Started) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise GatewayUnavailable(
                f"{started.log.stem} exited with {started.process.returncode}: "
                + started.log.read_text(errors="replace")[-1500:]
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise GatewayUnavailable(f"{url} did not answer within {STARTUP_S:.0f} s: see {started.log}")
