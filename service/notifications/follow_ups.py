"""The follow-up emails of an evaluation: named in the outbox by the API, rendered by the worker.

The candidate's mail thanks them and says what happens next; it is rendered from a context that
holds no score, recommendation or criterion, so no template change can leak one. The recruiters'
summary carries the scores, flags and the evaluation's path.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.config import Settings
from service.database import new_id
from service.notifications.mime import Mail
from service.notifications.outbox import OutboxMessage
from service.notifications.sender import sender_domain

CANDIDATE_FOLLOW_UP = "candidate_follow_up"
RECRUITER_SUMMARY = "recruiter_summary"
EVALUATION_PATH = "/v1/evaluations/{id}"


class EvaluationFacts(Protocol):
    """What a mail is rendered from: the evaluation's stored columns (the worker loads them)."""

    id: str
    candidate_name: str
    candidate_email: str
    position_title: str
    position_level: str | None
    overall_score: float | None
    recommendation: str | None
    result: dict[str, Any] | None
    partial: bool
    needs_review: bool


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


def candidate_context(evaluation: EvaluationFacts) -> dict[str, Any]:
    """What the candidate's mail may say: who and for what, never how they scored."""
    return {
        "candidate_name": evaluation.candidate_name,
        "position_title": evaluation.position_title,
    }


def recruiter_context(evaluation: EvaluationFacts) -> dict[str, Any]:
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


def render_mail(message: OutboxMessage, evaluation: EvaluationFacts, *, settings: Settings) -> Mail:
    """The mail an outbox row names, rendered now from its evaluation (in the worker)."""
    if message.kind == CANDIDATE_FOLLOW_UP:
        context = candidate_context(evaluation)
    else:
        context = recruiter_context(evaluation)
    subject, text, html = render(message.kind, message.language or "en", context)
    return Mail(
        message_id=message.message_id,
        sender=settings.email_from,
        recipient=message.recipient or "",
        subject=subject,
        text=text,
        html=html,
    )


def follow_up_rows(
    *,
    evaluation_id: str,
    candidate_email: str,
    notify: dict[str, Any] | None,
    language: str,
    settings: Settings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The outbox rows of the follow-ups `notify` asks for: named, not rendered.

    Stored in the transaction that stores the evaluation, so both are stored or neither."""
    if not notify:
        return []
    wanted: list[tuple[str, str]] = []
    if notify.get("candidate", True):
        wanted.append((CANDIDATE_FOLLOW_UP, candidate_email))
    # One summary per address, however often it is listed.
    for recipient in dict.fromkeys(r.lower() for r in notify.get("recruiters", ())):
        wanted.append((RECRUITER_SUMMARY, recipient))
    domain = sender_domain(settings.email_from)
    return [
        {
            "id": new_id(),
            "channel": "email",
            "kind": kind,
            "evaluation_id": evaluation_id,
            "recipient": recipient,
            "language": language,
            "subject": None,
            "text_body": None,
            "html_body": None,
            "url": None,
            "signing_key_id": None,
            "payload": None,
            "message_id": f"<{uuid.uuid4()}@{domain}>",
            "status": "queued",
            "attempts": 0,
            # A moment before `now`: the rows are due at once, whatever the clocks' grain.
            "next_attempt_at": now,
            "claimed_until": None,
            "claim_token": None,
            "last_error": None,
            # A microsecond apart, in the order asked: reads list an evaluation's mails by
            # creation, and must list them as its first answer did (random ids broke ties).
            "created_at": now + timedelta(microseconds=position),
            "sent_at": None,
        }
        for position, (kind, recipient) in enumerate(wanted)
    ]
