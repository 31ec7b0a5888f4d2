"""/docs and /redoc work air-gapped: every asset comes from the service itself, and Swagger UI
renders every operation in a real browser (Playwright driving the system's Chromium) whose
network reaches nothing but loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser import chromium
from tests.contract.documented import document
from tests.servers import serving

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

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


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def visit(browser: Browser, base_url: str, path: str, ready: str) -> tuple[Page, list[str]]:
    """`path` in the browser once `ready` shows, and every request the page sent to the
    network: anything not for the service is stopped there, and listed all the same. (ReDoc's
    logo from a CDN never gets that far: the docs' Content-Security-Policy blocks it.)"""
    page = browser.new_page()
    sent: list[str] = []

    def route(intercepted: Route) -> None:
        sent.append(intercepted.request.url)
        if intercepted.request.url.startswith(f"{base_url}/"):
            intercepted.continue_()
        else:
            intercepted.abort()

    page.route("**/*", route)
    page.goto(f"{base_url}{path}")
    page.wait_for_selector(ready, timeout=30_000)
    return page, sent


def test_swagger_ui_renders_every_operation_offline(
    database_url: str, tmp_path: Path, browser: Browser
) -> None:
    declared = {
        (method.upper(), path)
        for section in ("paths", "webhooks")
        for path, operations in document()[section].items()
        for method in operations
    }
    with serving(database_url=database_url, workdir=tmp_path) as base_url:
        page, requested = visit(browser, base_url, "/docs", ".opblock-summary")
        rendered = page.eval_on_selector_all(
            ".opblock-summary",
            """summaries => summaries.map(s => [
                s.querySelector('.opblock-summary-method').textContent,
                s.querySelector('.opblock-summary-path').dataset.path])""",
        )
        html = page.content()

    # Every operation and webhook of the document, as Swagger UI lists them.
    assert {tuple(r) for r in rendered} == declared
    assert "Score an interview" in html
    assert "Failed to load API definition" not in html
    # Nothing left the machine: the page, its assets and the document came from the service.
    assert requested
    assert all(url.startswith(f"{base_url}/") for url in requested), requested


def test_redoc_renders_offline(database_url: str, tmp_path: Path, browser: Browser) -> None:
    with serving(database_url=database_url, workdir=tmp_path) as base_url:
        page, requested = visit(browser, base_url, "/redoc", "h2")
        html = page.content()

    assert "Score an interview" in html, html[:3000]
    assert "/v1/evaluations" in html
    assert all(url.startswith(f"{base_url}/") for url in requested), requested
