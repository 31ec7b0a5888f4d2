"""What an evaluation shows of its reviews; pure, used when an evaluation is rendered."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from service.evaluations.models import Evaluation
from service.reviews.schemas import ReviewRead


def review_fields(evaluation: Evaluation) -> dict[str, Any]:
    """The review fields of the API view: the latest review's scores shown, the model's kept."""
    # A row that was just created has no reviews, and its collection was never loaded: reading
    # it would start a lazy load, which an async session cannot do.
    if "reviews" in inspect(evaluation).unloaded:
        reviews = []
    else:
        reviews = [ReviewRead.model_validate(r, from_attributes=True) for r in evaluation.reviews]
    fields: dict[str, Any] = {
        "model_overall_score": evaluation.overall_score,
        "model_recommendation": evaluation.recommendation,
        "review": reviews[-1] if reviews else None,
        "reviews": reviews,
    }
    if reviews:
        fields["overall_score"] = reviews[-1].overall_score
        fields["recommendation"] = reviews[-1].recommendation
    return fields
