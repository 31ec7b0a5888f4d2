"""Queueing evaluations for the workers, and reporting an item that cannot be queued."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from service.auth.models import ApiKey
from service.errors import TYPE_BASE
from service.evaluations.canonical import Interview
from service.evaluations.models import Evaluation
from service.evaluations.schemas import EvaluationCreate
from service.evaluations.service import evaluation_row


def queued_evaluation(payload: EvaluationCreate, *, api_key: ApiKey) -> Evaluation:
    """A pending evaluation that any worker may claim at once."""
    row = evaluation_row(
        Interview.of(payload, tenant=api_key.tenant), api_key=api_key, status="pending"
    )
    row["claimed_until"] = row["created_at"]
    # Known empty, so that reading it never needs a query (there is none to await).
    return Evaluation(**row, outbox_messages=[])


def validation_problem(exc: ValidationError, *, instance: str) -> dict[str, Any]:
    """A 422 problem naming each invalid field, as the API reports request validation."""
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())) or "body",
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return {
        "type": TYPE_BASE + "validation",
        "title": "Validation failed",
        "status": 422,
        "detail": f"The request is invalid: {fields}",
        "instance": instance,
        "errors": errors,
    }
