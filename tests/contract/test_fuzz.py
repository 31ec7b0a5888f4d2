"""The API fuzzed from its own document (schemathesis, a fixed seed and a fixed number of
examples): every operation, with a valid key, against the live service. No answer is a 5xx,
and every answer is one the document declares: its status, content type, headers and schema.
The stateful run follows the document's links: create, then read, review and erase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from schemathesis.config import SchemathesisConfig

from tests.contract.conftest import Live

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi.json"
SEED = 20261205
EXAMPLES = 30
SCENARIOS, STEPS = 30, 8


def _accepts_unprocessable(operation_id: str) -> dict[str, Any]:
    """An operation that may answer 422 to a request its schema admits: a rule no JSON
    Schema states (a transcript too short to score, a callback_url without respond-async or
    to a private address, review scores for criteria the evaluation lacks, a cursor that no
    page gave). A batch may also be 413: the document states the ceiling on its items
    (10,000), a deployment its own limit below it (SCORER_MAX_BATCH_ITEMS, 500)."""
    statuses = ["2xx", 401, 403, 404, 409, 422, 429]
    if operation_id == "createEvaluationBatch":
        statuses.append(413)
    return {
        "include-operation-id": operation_id,
        "checks": {"positive_data_acceptance": {"expected-statuses": statuses}},
    }


# The committed document, which tests/test_openapi.py proves is the one the service serves.
schema = schemathesis.openapi.from_path(
    DOCUMENT,
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES, "database": "none", "allow-x00": True},
            "operations": [
                _accepts_unprocessable(operation_id)
                for operation_id in (
                    "createEvaluation",
                    "createEvaluationBatch",
                    "createReview",
                    "listEvaluations",
                )
            ],
        }
    ),
)


def _auth(live: Live) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.api_key}"}


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(base_url=live.base_url, headers=_auth(live))


def test_linked_operations_answer_as_documented(live: Live) -> None:
    """Scenarios along the document's links: an evaluation made, then read, reviewed and
    erased in any order, each answer checked."""

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": live.base_url, "headers": _auth(live)}

    Scenarios.run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
