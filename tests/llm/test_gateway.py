"""The service scores through a real third-party gateway, the LiteLLM proxy, in front of the
simulator: the evaluation is the one it scores talking to the simulator directly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from service.auth.service import create_api_key
from service.config import Settings
from service.main import create_app
from tests.conftest import interview, server_unavailable, serving
from tests.databases import postgres_mode
from tests.jobs.helpers import ASYNC, eventually
from tests.llm.gateway import Gateway, GatewayUnavailable, running

# What the LLM and the analyzer decide: all of it must be the same either way.
SCORED = (
    "criteria", "summary", "portfolio", "overall_score", "recommendation",
    "needs_review", "partial", "usage", "model", "prompt_version",
)  # fmt: skip
# Installing the proxy the first time takes a minute or two; starting it about ten seconds.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The LiteLLM proxy routing to `interview-scorer simulate`, for this module."""
    if postgres_mode():
        pytest.skip("the gateway run does not depend on the database: it runs in the SQLite pass")
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(running(tmp_path_factory.mktemp("gateway")))
        except GatewayUnavailable as exc:
            server_unavailable(f"LiteLLM proxy: {exc}")
            raise
        yield started


async def evaluate(
    settings: Settings, *, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One evaluation of the sample interview by an app with these settings (and its worker),
    with its provenance, once scored; and the app's /readyz then."""
    app = create_app(settings)
    async with serving(app):
        async with app.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="gateway", scopes=("write", "read"))
        auth = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            body = interview(notify=None)
            response = await c.post("/v1/evaluations", json=body, headers=auth | (headers or {}))
            assert response.status_code in (201, 202), response.text
            location = f"/v1/evaluations/{response.json()['id']}?include=provenance"

            async def settled() -> bool:
                status = (await c.get(location, headers=auth)).json()["status"]
                return bool(status != "pending")

            await eventually(settled)
            evaluation: dict[str, Any] = (await c.get(location, headers=auth)).json()
            ready: dict[str, Any] = (await c.get("/readyz")).json()
    assert evaluation["status"] == "completed", evaluation
    return evaluation, ready


def through(settings: Settings, gateway: Gateway, *, proxy: bool, model: str = "") -> Settings:
    """The settings of a run against the simulator, directly or through the proxy. The
    production HTTP transport (aiohttp): respx sees none of these calls."""
    return settings.model_copy(
        update={
            "llm_base_url": gateway.proxy_url if proxy else gateway.simulator_url,
            # The proxy demands its master key; the simulator takes any.
            "llm_api_key": SecretStr(gateway.master_key if proxy else "sk-direct"),
            "llm_model": model or gateway.model,
            "portfolio_analyzer_url": gateway.analyzer_url,
            "http_transport": "aiohttp",
            "cache_ttl_s": 0,
        }
    )


def scored(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {key: evaluation[key] for key in SCORED}


async def test_an_evaluation_through_the_proxy_is_the_one_scored_directly(
    gateway: Gateway, settings: Settings, upstream: respx.MockRouter
) -> None:
    direct, _ = await evaluate(through(settings, gateway, proxy=False))
    proxied, ready = await evaluate(through(settings, gateway, proxy=True))

    assert scored(proxied) == scored(direct)
    assert direct["portfolio"]["status"] == "ok"
    assert [c["score"] for c in direct["criteria"]] != [None, None]
    assert proxied["provenance"]["response_format"] == "json_schema"
    assert ready["llm"]["response_format"] == "json_schema"


async def test_the_worker_scores_through_the_proxy_alike(
    gateway: Gateway, settings: Settings, upstream: respx.MockRouter
) -> None:
    direct, _ = await evaluate(through(settings, gateway, proxy=False))
    proxied, _ = await evaluate(through(settings, gateway, proxy=True), headers=ASYNC)

    assert scored(proxied) == scored(direct)


async def test_a_model_without_json_schema_behind_the_proxy_is_scored_in_json_mode(
    gateway: Gateway, settings: Settings, upstream: respx.MockRouter
) -> None:
    """The backend's 400 reaches the service through the proxy, which falls back to JSON mode."""
    evaluation, ready = await evaluate(
        through(settings, gateway, proxy=True, model=gateway.json_mode_model)
    )

    assert evaluation["provenance"]["response_format"] == "json_object"
    [[refused, answered]] = evaluation["provenance"]["samples"]
    assert (refused["error"], refused["response_format"]) == ("BadRequestError", "json_schema")
    assert answered["response_format"] == "json_object"
    assert [c["score"] for c in evaluation["criteria"]] != [None, None]
    assert ready["llm"]["response_format"] == "json_object"


async def test_a_wrong_key_is_refused_by_the_proxy(
    gateway: Gateway, settings: Settings, upstream: respx.MockRouter
) -> None:
    """The calls really cross the proxy: it checks the key the service sends (the simulator
    takes any)."""
    wrong = through(settings, gateway, proxy=True)
    app = create_app(wrong.model_copy(update={"llm_api_key": SecretStr("sk-wrong")}))
    async with serving(app):
        async with app.state.sessionmaker() as session, session.begin():
            _, key = await create_api_key(session, name="gateway", scopes=("write",))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer.test") as c:
            response = await c.post(
                "/v1/evaluations",
                json=interview(notify=None),
                headers={"Authorization": f"Bearer {key}"},
            )
            ready = (await c.get("/readyz")).json()

    assert response.status_code == 502, response.text
    assert response.json()["type"].endswith("llm-rejected")
    # Without a database of keys the proxy answers 400 "No connected db" to all but its master
    # key: nothing to do with the schema, so no JSON mode either.
    assert "400" in response.json()["detail"]
    assert ready["llm"]["response_format"] == "json_schema"
