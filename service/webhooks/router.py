"""The webhooks the service sends, declared for the OpenAPI document's `webhooks` section.

Nothing here is served: the worker sends these requests (service/webhooks/delivery.py) and
the frontend's receiver answers them. The declarations give the generated client the bodies'
types and the receiver the headers to verify.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response

from service.webhooks.schemas import BatchEvent, EvaluationEvent
from service.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

webhooks = APIRouter(default_response_class=Response)
ACCEPTED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Accepted (any 2xx); any other answer, or none within "
        "SCORER_WEBHOOK_TIMEOUT_S, is retried with backoff"
    }
}


def _signed(
    signature: Annotated[
        str,
        Header(
            alias=SIGNATURE_HEADER,
            description="`t=<timestamp>,v1=<hex HMAC-SHA256 of '<timestamp>.<body>'>` under the "
            "API key's webhook secret (`interview-scorer api-keys webhook-secret KEY`); reject "
            "a timestamp more than 5 minutes away",
        ),
    ],
    timestamp: Annotated[
        int, Header(alias=TIMESTAMP_HEADER, description="Unix seconds when this attempt was signed")
    ],
    event: Annotated[str, Header(alias="X-Scorer-Event", description="the event's `type`")],
    delivery: Annotated[
        str, Header(alias="X-Scorer-Delivery", description="the event's `id`, kept on retries")
    ],
) -> None:
    """The headers of every delivery."""


Signed = Annotated[None, Depends(_signed)]


@webhooks.post(
    "evaluation.completed",
    operation_id="onEvaluationCompleted",
    summary="An asynchronous evaluation was scored",
    tags=["evaluations"],
    responses=ACCEPTED,
)
async def evaluation_completed(event: EvaluationEvent, _: Signed) -> None:
    """Sent when an evaluation made with `Prefer: respond-async` and a `callback_url` is scored."""


@webhooks.post(
    "evaluation.failed",
    operation_id="onEvaluationFailed",
    summary="An asynchronous evaluation failed",
    tags=["evaluations"],
    responses=ACCEPTED,
)
async def evaluation_failed(event: EvaluationEvent, _: Signed) -> None:
    """Sent when an evaluation made with `Prefer: respond-async` and a `callback_url` fails:
    `data.error` says why."""


@webhooks.post(
    "batch.completed",
    operation_id="onBatchCompleted",
    summary="Every item of a batch has finished",
    tags=["batches"],
    responses=ACCEPTED,
)
async def batch_completed(event: BatchEvent, _: Signed) -> None:
    """Sent when a batch with a `callback_url` has no item left pending."""
