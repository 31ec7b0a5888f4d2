"""POST /v1/evaluations/{id}/reviews: a person overrules the model, with the reason on record."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select

from service.evaluations.models import Evaluation
from service.reviews.models import EvaluationReview
from tests.conftest import (
    ANALYZER_URL,
    LLM_BASE_URL,
    KeyMaker,
    analysis,
    completion,
    interview,
    scores_content,
    settle,
)


@pytest.fixture
async def evaluation(
    client: httpx.AsyncClient, auth: dict[str, str], upstream: respx.MockRouter, app: FastAPI
) -> dict[str, Any]:
    """A completed evaluation: technical_depth 4, communication 3, portfolio 82 -> 69.7, hire;
    its follow-up mails sent, so that nothing but a review changes it."""
    upstream.post(f"{LLM_BASE_URL}/chat/completions").mock(
        return_value=completion(scores_content({"technical_depth": 4, "communication": 3}))
    )
    upstream.post(f"{ANALYZER_URL}/analyze").mock(return_value=analysis(82))
    response = await client.post("/v1/evaluations", json=interview(), headers=auth)
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    assert (body["overall_score"], body["recommendation"]) == (69.7, "hire")
    await settle(app)
    return body


async def review_count(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(EvaluationReview)) or 0)


async def test_adjusted_scores_change_the_shown_score_and_keep_the_models_beside_it(
    client: httpx.AsyncClient, auth: dict[str, str], evaluation: dict[str, Any]
) -> None:
    url = f"/v1/evaluations/{evaluation['id']}"

    response = await client.post(
        f"{url}/reviews",
        json={"criterion_scores": {"technical_depth": 2}, "reason": "Could not explain the GIL."},
        headers=auth,
    )

    assert response.status_code == 201, response.text
    assert response.headers["location"] == url
    body = response.json()
    # (25 * 2 + 50) / 3 = 33.33, blended 0.8 * 33.33 + 0.2 * 82 = 43.1
    assert (body["overall_score"], body["recommendation"]) == (43.1, "no_hire")
    assert (body["model_overall_score"], body["model_recommendation"]) == (69.7, "hire")
    # The criteria stay as the model scored them; the review says what changed.
    assert body["criteria"][0]["score"] == 4
    review = body["review"]
    assert review["criterion_scores"] == {"technical_depth": 2}
    assert review["decision"] is None
    assert review["reason"] == "Could not explain the GIL."
    assert review["api_key_id"]
    assert body["reviews"] == [review]
    assert (await client.get(url, headers=auth)).json() == body


async def test_reviews_build_on_each_other_and_the_history_is_kept(
    client: httpx.AsyncClient, auth: dict[str, str], evaluation: dict[str, Any]
) -> None:
    url = f"/v1/evaluations/{evaluation['id']}"
    await client.post(
        f"{url}/reviews",
        json={"criterion_scores": {"technical_depth": 2}, "reason": "first"},
        headers=auth,
    )

    second = await client.post(
        f"{url}/reviews", json={"decision": "strong_hire", "reason": "second"}, headers=auth
    )

    body = second.json()
    # The first review's adjustment still holds; the decision overrides the recommendation.
    assert (body["overall_score"], body["recommendation"]) == (43.1, "strong_hire")
    assert [r["reason"] for r in body["reviews"]] == ["first", "second"]
    assert body["review"]["reason"] == "second"
    listed = (await client.get("/v1/evaluations", headers=auth)).json()["items"][0]
    assert (listed["overall_score"], listed["recommendation"]) == (43.1, "strong_hire")
    assert len(listed["reviews"]) == 2


async def test_an_evaluation_without_reviews_shows_the_models_scores(
    evaluation: dict[str, Any],
) -> None:
    assert evaluation["review"] is None
    assert evaluation["reviews"] == []
    assert evaluation["model_overall_score"] == evaluation["overall_score"] == 69.7
    assert evaluation["model_recommendation"] == "hire"


@pytest.mark.parametrize(
    ("review", "field"),
    [
        ({"decision": "hire"}, "reason"),
        ({"decision": "hire", "reason": "   "}, "reason"),
        ({"decision": "hire", "reason": "x" * 2001}, "reason"),
        ({"reason": "nothing to record"}, "body"),
        ({"criterion_scores": {"technical_depth": 6}, "reason": "r"}, "criterion_scores"),
        ({"criterion_scores": {"technical_depth": 0}, "reason": "r"}, "criterion_scores"),
        ({"decision": "maybe", "reason": "r"}, "decision"),
    ],
)
async def test_invalid_reviews_are_rejected_and_nothing_is_stored(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    evaluation: dict[str, Any],
    app: FastAPI,
    review: dict[str, Any],
    field: str,
) -> None:
    response = await client.post(
        f"/v1/evaluations/{evaluation['id']}/reviews", json=review, headers=auth
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith(field)
    assert await review_count(app) == 0


async def test_scores_for_criteria_the_evaluation_lacks_are_rejected(
    client: httpx.AsyncClient, auth: dict[str, str], evaluation: dict[str, Any], app: FastAPI
) -> None:
    response = await client.post(
        f"/v1/evaluations/{evaluation['id']}/reviews",
        json={"criterion_scores": {"leadership": 3}, "reason": "r"},
        headers=auth,
    )

    assert response.status_code == 422
    assert "leadership" in response.json()["detail"]
    assert await review_count(app) == 0


async def test_reviewing_needs_the_write_scope(
    client: httpx.AsyncClient, make_key: KeyMaker, evaluation: dict[str, Any]
) -> None:
    reader = await make_key("read")

    response = await client.post(
        f"/v1/evaluations/{evaluation['id']}/reviews",
        json={"decision": "hire", "reason": "r"},
        headers=reader,
    )

    assert response.status_code == 403


async def test_unknown_evaluation_is_404(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post(
        "/v1/evaluations/nope/reviews", json={"decision": "hire", "reason": "r"}, headers=auth
    )

    assert response.status_code == 404


async def test_an_evaluation_not_yet_completed_cannot_be_reviewed(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        pending = Evaluation(
            status="pending",
            candidate_name="Jane Doe",
            candidate_email="jane@example.com",
            position_title="Backend Engineer",
            request={},
        )
        session.add(pending)

    response = await client.post(
        f"/v1/evaluations/{pending.id}/reviews",
        json={"decision": "hire", "reason": "r"},
        headers=auth,
    )

    assert response.status_code == 409
    assert "pending" in response.json()["detail"]


async def test_erasing_an_evaluation_erases_its_reviews(
    client: httpx.AsyncClient, auth: dict[str, str], evaluation: dict[str, Any], app: FastAPI
) -> None:
    url = f"/v1/evaluations/{evaluation['id']}"
    await client.post(f"{url}/reviews", json={"decision": "hire", "reason": "r"}, headers=auth)
    assert await review_count(app) == 1

    assert (await client.delete(url, headers=auth)).status_code == 204

    assert await review_count(app) == 0


async def test_openapi_documents_the_review_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()

    operation = spec["paths"]["/v1/evaluations/{evaluation_id}/reviews"]["post"]
    assert {"201", "404", "409", "422"} <= set(operation["responses"])
    review = spec["components"]["schemas"]["ReviewCreate"]
    assert "reason" in review["required"]
