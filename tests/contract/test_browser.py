"""A frontend in a real browser: a page served from a second loopback origin calls the live API
with fetch, in headless Chromium (Playwright driving the system's browser). CORS admits the
page's origin with the headers a frontend sends, refuses another, and lets JavaScript read
what it needs from the answers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser import chromium
from tests.conftest import interview
from tests.contract.conftest import Live
from tests.servers import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PAGE = Path(__file__).resolve().parent / "page"
# What a frontend's create sends beyond the CORS-safelisted headers: each needs the preflight.
SENT_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def site(port: int) -> Iterator[str]:
    """The test page served on 127.0.0.1:`port` until the block ends; its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_Quiet, directory=str(PAGE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def allowed_origin(live: Live) -> Iterator[str]:
    """The page on the origin SCORER_CORS_ORIGINS names."""
    with site(live.page_port) as origin:
        yield origin


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """The same page on an origin the service does not admit."""
    with site(free_port()) as origin:
        yield origin


@contextmanager
def opened(browser: Browser, origin: str) -> Iterator[Page]:
    page = browser.new_page()
    try:
        page.goto(f"{origin}/index.html")
        yield page
    finally:
        page.close()


def call(page: Page, live: Live, path: str, **options: Any) -> dict[str, Any]:
    """What the page's fetch of `path` could read (or the error fetch threw)."""
    result: dict[str, Any] = page.evaluate(
        "([base, path, options]) => window.scorer.call(base, path, options)",
        [live.base_url, path, options],
    )
    return result


def test_an_allowed_origin_creates_and_reads_what_a_frontend_needs(
    browser: Browser, live: Live, allowed_origin: str
) -> None:
    body = interview(position={"title": f"Browser {uuid.uuid4()}"})
    idempotency = {"Idempotency-Key": str(uuid.uuid4())}
    with opened(browser, allowed_origin) as page:
        create = partial(call, page, live, "/v1/evaluations", method="POST", key=live.api_key)
        first = create(body=body, headers=idempotency)
        again = create(body=body, headers=idempotency)
        accepted = create(body=body, headers={"Prefer": "respond-async"})
        invalid = create(body={**body, "candidate": {"name": "Jane", "email": "nope"}})
        anonymous = call(page, live, f"/v1/evaluations/{first['body']['id']}")

    assert first["status"] == 201, first
    assert first["headers"]["location"] == f"/v1/evaluations/{first['body']['id']}"
    assert first["headers"]["replayed"] is None
    assert first["headers"]["requestId"]
    assert again["status"] == 201
    assert again["headers"]["replayed"] == "true"
    assert again["body"]["id"] == first["body"]["id"]
    assert accepted["status"] == 202
    assert accepted["headers"]["retryAfter"] == "1"
    assert accepted["headers"]["preferenceApplied"] == "respond-async"
    assert accepted["headers"]["location"] == f"/v1/evaluations/{accepted['body']['id']}"
    assert invalid["status"] == 422
    assert invalid["headers"]["contentType"] == "application/problem+json"
    assert [e["field"] for e in invalid["body"]["errors"]] == ["candidate.email"]
    assert invalid["headers"]["requestId"]
    assert anonymous["status"] == 401
    assert anonymous["body"]["type"].endswith("/unauthorized")


def test_another_origin_is_refused_before_anything_is_stored(
    browser: Browser, live: Live, other_origin: str
) -> None:
    title = f"Refused {uuid.uuid4()}"
    with opened(browser, other_origin) as page:
        refused = call(
            page,
            live,
            "/v1/evaluations",
            method="POST",
            key=live.api_key,
            body=interview(position={"title": title}),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )

    assert refused == {"error": "TypeError: Failed to fetch"}
    # The preflight failed, so the POST itself was never sent.
    listed = httpx.get(
        f"{live.base_url}/v1/evaluations",
        params={"position": title},
        headers={"Authorization": f"Bearer {live.api_key}"},
    )
    assert listed.json()["items"] == []


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed-origin", "other-origin"])
def test_the_preflight_admits_the_frontends_headers_for_its_origin_only(
    live: Live, allowed: bool
) -> None:
    origin = live.page_origin if allowed else f"http://127.0.0.1:{free_port()}"
    response = httpx.options(
        f"{live.base_url}/v1/evaluations",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": ", ".join(h.lower() for h in SENT_HEADERS),
        },
    )

    if allowed:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        admitted = {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert {h.lower() for h in SENT_HEADERS} <= admitted
    else:
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
