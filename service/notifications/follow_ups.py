"""The follow-up emails of an evaluation: rendered from the package's templates and enqueued.

The candidate's mail thanks them and says what happens next; it is rendered from a context that
holds no score, recommendation or criterion, so no template change can leak one. The recruiters'
summary carries the scores, flags and the evaluation's path.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.config import Settings
from service.evaluations.models import Evaluation
from service.evaluations.schemas import EvaluationCreate
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import sender_domain

CANDIDATE_FOLLOW_UP = "candidate_follow_up"
RECRUITER_SUMMARY = "recruiter_summary"
EVALUATION_PATH = "/v1/evaluations/{id}"


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("service.notifications", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(kind: str, language: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """The subject, text and HTML of a mail of `kind` in `language`."""
    env = _environment()
    subject = env.get_template(f"{kind}.{language}.subject.j2").render(context)
    text = env.get_template(f"{kind}.{language}.txt.j2").render(context)
    html = env.get_template(f"{kind}.{language}.html.j2").render(context)
    # One line: a header cannot carry a line break (nor be made to inject one).
    return " ".join(subject.split()), text, html


def candidate_context(evaluation: Evaluation) -> dict[str, Any]:
    """What the candidate's mail may say: who and for what, never how they scored."""
    return {
        "candidate_name": evaluation.candidate_name,
        "position_title": evaluation.position_title,
    }


def recruiter_context(evaluation: Evaluation) -> dict[str, Any]:
    """What the recruiters' summary says."""
    result = evaluation.result or {}
    return {
        "candidate_name": evaluation.candidate_name,
        "candidate_email": evaluation.candidate_email,
        "position_title": evaluation.position_title,
        "position_level": evaluation.position_level,
        "overall_score": evaluation.overall_score,
        "recommendation": evaluation.recommendation,
        "criteria": result.get("criteria", []),
        "partial": evaluation.partial,
        "needs_review": evaluation.needs_review,
        "evaluation_path": EVALUATION_PATH.format(id=evaluation.id),
    }


def _message(
    evaluation: Evaluation, *, kind: str, recipient: str, language: str, settings: Settings
) -> OutboxMessage:
    context = candidate_context(evaluation) if kind == CANDIDATE_FOLLOW_UP else None
    subject, text, html = render(kind, language, context or recruiter_context(evaluation))
    return OutboxMessage(
        channel="email",
        kind=kind,
        recipient=recipient,
        subject=subject,
        text_body=text,
        html_body=html,
        message_id=f"<{uuid.uuid4()}@{sender_domain(settings.email_from)}>",
        status="queued",
        attempts=0,
    )


def enqueue_follow_ups(
    evaluation: Evaluation, *, payload: EvaluationCreate, settings: Settings
) -> list[OutboxMessage]:
    """Attach the follow-ups `payload.notify` asks for to `evaluation`; saved with it."""
    notify = payload.notify
    if notify is None:
        return []
    wanted: list[tuple[str, str]] = []
    if notify.candidate:
        wanted.append((CANDIDATE_FOLLOW_UP, evaluation.candidate_email))
    # One summary per address, however often it is listed.
    for recipient in dict.fromkeys(r.lower() for r in notify.recruiters):
        wanted.append((RECRUITER_SUMMARY, recipient))
    messages = [
        _message(
            evaluation,
            kind=kind,
            recipient=recipient,
            language=payload.language,
            settings=settings,
        )
        for kind, recipient in wanted
    ]
    evaluation.outbox_messages.extend(messages)
    return messages
