"""Every table, imported in one place for Alembic's autogenerate and the app."""

from service.auth.models import ApiKey
from service.batches.models import EvaluationBatch
from service.database import Base
from service.evaluations.models import Evaluation
from service.idempotency.models import IdempotencyKey
from service.notifications.outbox import OutboxMessage
from service.reviews.models import EvaluationReview

__all__ = [
    "ApiKey",
    "Base",
    "Evaluation",
    "EvaluationBatch",
    "EvaluationReview",
    "IdempotencyKey",
    "OutboxMessage",
]
