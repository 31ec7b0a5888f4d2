"""The MIME bytes written directly read, with the standard library's parser, as the message the
email package builds: every header, every part."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import pytest

from service.notifications.mime import Mail, build_message, message_bytes

DATE = datetime(2026, 12, 5, 18, 30, tzinfo=UTC)
SENDER = "Interview Scorer <no-reply@interview-scorer.local>"
TEXT = "Dear Jane Doe,\n\nThank you.\n.\nFrom the team\n  indented, trailing space \n"
HTML = "<html><body><p>Dear Jane &amp; co,</p>\n<p>Thank you.</p></body></html>"
KOREAN = "김지원 님께\n\n면접에 참여해 주셔서 감사합니다.\n"


def mail(**changes: object) -> Mail:
    values: dict[str, object] = {
        "message_id": "<1a2b3c4d-0000-4000-8000-000000000001@interview-scorer.local>",
        "sender": SENDER,
        "recipient": "jane@example.com",
        "subject": "Thank you for interviewing for Backend Engineer",
        "text": TEXT,
        "html": HTML,
    }
    values.update(changes)
    return Mail(**values)  # type: ignore[arg-type]


CASES = {
    "ascii": mail(),
    "korean": mail(
        subject="Backend Engineer 면접에 참여해 주셔서 감사합니다",
        text=KOREAN,
        html=f"<p>{KOREAN}</p>",
    ),
    "long subject": mail(subject="Interview scored: " + "Jane Doe, " * 12 + "(69.7)"),
    "long korean subject": mail(subject="면접 결과 " * 30),
    "text only": mail(html=None),
    "sender with a non-ASCII name": mail(sender='"Scorer, 면접" <no-reply@x.org>'),
    "non-ASCII recipient": mail(recipient="jiwon@bücher.example"),
    "empty bodies": mail(text="", html=""),
}


def _parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def _read(message: EmailMessage) -> dict[str, object]:
    parts = list(message.walk()) if message.is_multipart() else [message]
    return {
        "headers": {
            name: str(message[name])
            for name in ("From", "To", "Subject", "Message-ID", "Date", "Auto-Submitted")
        },
        "type": message.get_content_type(),
        "parts": [
            (part.get_content_type(), part.get_content_charset(), part.get_content())
            for part in parts
            if not part.is_multipart()
        ],
    }


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_written_message_reads_as_the_email_packages(case: Mail) -> None:
    ours = _parse(message_bytes(case, date=DATE))
    theirs = _parse(build_message(case, date=DATE).as_bytes())

    assert _read(ours) == _read(theirs)


def test_every_line_is_short_and_ascii() -> None:
    for case in CASES.values():
        for line in message_bytes(case, date=DATE).split(b"\n"):
            assert line.isascii()
            assert len(line) <= 998


def test_a_line_break_in_the_subject_cannot_add_a_header() -> None:
    hostile = mail(subject="Thank you, Jane\nBcc: everyone@example.com")

    message = _parse(message_bytes(hostile, date=DATE))

    assert message["Bcc"] is None
    assert "everyone@example.com" in str(message["Subject"])
