"""The container image, built from the real Dockerfile by `make image`'s script and run as the
image runs: its command, as its user, with its environment, in its filesystem.

Where podman and mmdebstrap are installed (CI installs them, .ci/run): the base image is
bootstrapped from Debian's packages (no registry image can be pulled here) and the Dockerfile is
built with `podman build --isolation chroot`. The OCI runtimes cannot start a container on these
machines, so the image's commands run by chroot into `podman mount` of a created container, in
a mount namespace of their own (with /dev and /proc, as a runtime gives them), as the image's
USER, with the image's Env and WorkingDir and nothing of the host's environment. The chroot
shares the host's network: the CMD's port is replaced by a free loopback port, and the same in
the HEALTHCHECK's URL. Then: `migrate`, the simulators, the CMD (`serve`, which starts a worker
beside the API; were it `--no-worker`, `interview-scorer worker` would run beside it), /healthz
by the HEALTHCHECK's own command, a key, a scored interview, and the worker's mail written to
the image's mail folder as the image's user.

SQLite pass only: the image's default database is its own SQLite file, and building the same
image again in the PostgreSQL pass would add minutes and prove nothing more.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import server_unavailable
from tests.databases import postgres_mode
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/interview-scorer:test"
pytestmark = [
    pytest.mark.skipif(postgres_mode(), reason="SQLite pass only (see the module's docstring)"),
    # Bootstrapping the base (once per machine) and building take minutes on 2 cores.
    pytest.mark.timeout(1200),
]


def _podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


@dataclass(frozen=True)
class Image:
    """A created container's filesystem, and how the image says to run in it."""

    root: Path
    user: str
    env: dict[str, str]
    workdir: str
    cmd: list[str]
    healthcheck: list[str]

    def command(self, argv: list[str], **extra_env: str) -> list[str]:
        """`argv` in the image, as its user, with its environment (and `extra_env`)."""
        env = [f"{k}={v}" for k, v in {**self.env, **extra_env}.items()]
        script = (
            'mount --rbind /dev "$0/dev" && mount -t proc proc "$0/proc" && '
            'exec chroot --userspec="$1" "$0" /usr/bin/env -i -C "$2" "${@:3}"'
        )
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "bash", "-c", script, str(self.root), self.user, self.workdir, *env, *argv,
        ]  # fmt: skip

    def run(self, argv: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the image to its end."""
        return subprocess.run(
            self.command(argv, **extra_env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The image built by deploy/build-image, a container created from it, mounted."""
    missing = [tool for tool in ("podman", "mmdebstrap", "unshare") if not shutil.which(tool)]
    if missing:
        server_unavailable(f"the image test needs {', '.join(missing)}")
    if os.geteuid() != 0:
        server_unavailable("the image test runs chroot and mounts: it needs root")
    log = tmp_path_factory.mktemp("image") / "build.log"
    # The builder stage leaves an untagged image: the ones this build adds are removed after.
    dangling_before = set(_podman("images", "--quiet", "--filter", "dangling=true").split())
    with log.open("w") as out:
        build = subprocess.run(
            ["bash", str(ROOT / "deploy" / "build-image")],
            env={**os.environ, "IMAGE": TAG, "PYTHON_IMAGE": "bootstrap", "ENGINE": "podman"},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1100,
            check=False,
        )
    assert build.returncode == 0, log.read_text()[-4000:]
    inspected = json.loads(_podman("image", "inspect", TAG))[0]
    config = inspected["Config"]
    container = _podman("create", TAG)
    try:
        root = Path(_podman("mount", container))
        yield Image(
            root=root,
            user=config["User"],
            env=dict(item.split("=", 1) for item in config["Env"]),
            workdir=config["WorkingDir"],
            cmd=config["Cmd"],
            healthcheck=inspected["Healthcheck"]["Test"],
        )
    finally:
        subprocess.run(["podman", "umount", container], capture_output=True, check=False)
        subprocess.run(["podman", "rm", "--force", container], capture_output=True, check=False)
        subprocess.run(["podman", "rmi", TAG], capture_output=True, check=False)
        dangling = set(_podman("images", "--quiet", "--filter", "dangling=true").split())
        for leftover in dangling - dangling_before:
            subprocess.run(["podman", "rmi", leftover], capture_output=True, check=False)


class Background:
    """Commands started in the image; each stopped, with its whole process group, at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, image: Image, name: str, argv: list[str], **env: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            self.children.append(
                subprocess.Popen(
                    image.command(argv, **env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def _replace_port(argv: list[str], port: int) -> list[str]:
    """The CMD on a free loopback port (the chroot shares the host's network)."""
    out = list(argv)
    for flag, value in (("--port", str(port)), ("--host", "127.0.0.1")):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _eventually(check: Any, *, within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {within_s} s: {what}")


def test_the_image_migrates_serves_scores_and_mails_as_its_user(
    image: Image, tmp_path: Path
) -> None:
    assert image.user.split(":")[0] not in ("", "0", "root")
    uid = int(image.user.split(":")[0])
    port, simulator = free_port(), free_port()
    deployment = {
        "SCORER_LLM_PROVIDER": "simulated",
        "SCORER_LLM_BASE_URL": f"http://127.0.0.1:{simulator}/v1",
        "SCORER_PORTFOLIO_ANALYZER_URL": f"http://127.0.0.1:{simulator}",
    }

    migrated = image.run(["interview-scorer", "migrate"])
    assert migrated.returncode == 0, migrated.stderr
    database = image.env["SCORER_DATABASE_URL"].split(":///", 1)[1].lstrip("/")
    assert (image.root / database).stat().st_uid == uid

    background = Background(tmp_path)
    try:
        background.start(
            image,
            "simulate",
            ["interview-scorer", "simulate", "--port", str(simulator), "--llm-latency", "0.1"],
        )
        background.start(image, "serve", _replace_port(image.cmd, port), **deployment)
        if "--no-worker" in image.cmd:
            # A deployment whose API runs without one runs the worker beside it.
            background.start(image, "worker", ["interview-scorer", "worker"], **deployment)

        # The HEALTHCHECK's own command, in the image, its URL on the served port.
        assert image.healthcheck[0] == "CMD"
        probe = [arg.replace(":8000/", f":{port}/") for arg in image.healthcheck[1:]]
        assert probe != image.healthcheck[1:], "the HEALTHCHECK names port 8000"
        _eventually(
            lambda: image.run(probe).returncode == 0, within_s=90, what="HEALTHCHECK passes"
        )

        created = image.run(["interview-scorer", "api-keys", "create", "image"])
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        base = f"http://127.0.0.1:{port}"
        body = json.loads((ROOT / "examples" / "senior-backend-strong.json").read_text())
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
            response = client.post("/v1/evaluations", json=body)
            assert response.status_code == 201, response.text
            evaluation = response.json()
            assert evaluation["model"] == "simulated"
            assert evaluation["overall_score"] is not None

            # The worker (the one serve started beside the API) delivers the mails.
            def sent() -> bool:
                read = client.get(f"/v1/evaluations/{evaluation['id']}").json()
                return all(n["status"] == "sent" for n in read["notifications"])

            _eventually(sent, within_s=60, what="both mails sent")
    finally:
        background.stop()

    mails = sorted((image.root / image.env["SCORER_EMAIL_DIR"].lstrip("/")).glob("*.eml"))
    assert len(mails) == 2
    recipients = {
        line.split(":", 1)[1].strip()
        for mail in mails
        for line in mail.read_text().splitlines()
        if line.startswith("To:")
    }
    assert recipients == {body["candidate"]["email"], *body["notify"]["recruiters"]}
    assert all(mail.stat().st_uid == uid for mail in mails)
