"""Headless Chromium driven by Playwright: the system's browser (no download), with no network
but loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.conftest import server_unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    # Everything goes to a proxy that does not exist, except loopback: a CDN would fail.
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>;127.0.0.1;localhost",
]


def chromium_path() -> str:
    """The system's Chromium; the test is skipped (failed in CI) without it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    server_unavailable("chromium is not installed (apt-get install chromium)")
    raise AssertionError


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium until the block ends."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
