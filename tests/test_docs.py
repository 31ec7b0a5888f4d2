"""/docs and /redoc work air-gapped: every asset comes from the service itself, and Swagger UI
renders the operations in a real browser whose network reaches nothing but loopback."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import server_unavailable
from tests.servers import serving

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")
ABSOLUTE = re.compile(r"\b(?:https?:)?//[^\s\"'<>]+")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_load_assets_from_the_service_only(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    html = response.text
    assert ABSOLUTE.findall(html) == []
    assets = [a or b for a, b in URL.findall(html)] + re.findall(r"url: *'([^']+)'", html)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), asset
        assert (await client.get(asset)).status_code == 200, asset


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    server_unavailable("chromium is not installed")
    raise AssertionError


def render(url: str, profile: Path, *, budget_ms: int = 15000) -> str:
    """The DOM of `url` after its scripts ran, in headless Chromium with no network but loopback."""
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         f"--user-data-dir={profile}",
         # Everything goes to a proxy that does not exist, except loopback: a CDN would fail.
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_renders_offline(database_url: str, tmp_path: Path) -> None:
    chromium()
    with serving(database_url=database_url, workdir=tmp_path) as base_url:
        dom = render(f"{base_url}/docs", tmp_path / "profile")

    summaries = re.findall(
        r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom
    ) or re.findall(r'class="opblock-summary-path"[^>]*>.*?<span>([^<]+)</span>', dom)
    assert "/v1/evaluations" in summaries, dom[:3000]
    assert "/v1/evaluations/{evaluation_id}" in summaries
    assert "Score an interview" in dom
    assert "Failed to load API definition" not in dom


def test_redoc_renders_offline(database_url: str, tmp_path: Path) -> None:
    chromium()
    with serving(database_url=database_url, workdir=tmp_path) as base_url:
        dom = render(f"{base_url}/redoc", tmp_path / "profile")

    assert "Score an interview" in dom, dom[:3000]
    assert "/v1/evaluations" in dom
