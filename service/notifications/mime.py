"""A rendered mail as the bytes of a MIME message, written directly.

The standard library's email package builds the same message (`build_message` below, still
used where this cannot write it) at about half a millisecond a mail, most of it in its
generator: header folding, a regular expression compiled per message, a random boundary. This
writes
the structure a follow-up mail always has (text, and HTML as its alternative, UTF-8 in base64)
in a few string operations; headers that need encoding are still encoded by the email package
(`Header`, `formataddr`), and a mail with an address that is not plain ASCII is left to it
altogether. tests/notifications/test_mime.py checks that the standard library's parser reads
both versions of every kind of mail the same.
"""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr


@dataclass(frozen=True)
class Mail:
    """A rendered mail, as stored in the outbox."""

    message_id: str
    sender: str
    recipient: str
    subject: str
    text: str
    html: str | None


def build_message(mail: Mail, *, date: datetime) -> Message:
    """The MIME message: text, and HTML as its alternative.

    Built with the compat32 classes: the modern policy's header folding drops the space between
    two encoded words (CPython 3.11), which mangles long non-ASCII subjects such as Korean ones.
    """
    message: Message
    if mail.html is None:
        message = MIMEText(mail.text, "plain", "utf-8")
    else:
        message = MIMEMultipart("alternative")
        message.attach(MIMEText(mail.text, "plain", "utf-8"))
        message.attach(MIMEText(mail.html, "html", "utf-8"))
    name, address = parseaddr(mail.sender)
    message["From"] = formataddr((name, address), charset="utf-8")
    message["To"] = mail.recipient
    if mail.subject.isascii():
        message["Subject"] = mail.subject
    else:
        # compat32 messages take Header objects; typeshed only knows str.
        message["Subject"] = Header(mail.subject, "utf-8")  # type: ignore[assignment]
    message["Message-ID"] = mail.message_id
    message["Date"] = format_datetime(date)
    # Tells autoresponders not to answer (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    return message


# A header line's length beyond which the email package folds it (RFC 5322's 78).
_MAX_LINE = 78


def _plain(value: str) -> bool:
    """Printable ASCII, no line breaks: safe in a header as it is."""
    return value.isascii() and value.isprintable()


@functools.cache
def _from_header(sender: str) -> str:
    name, address = parseaddr(sender)
    return formataddr((name, address), charset="utf-8")


def _subject_header(subject: str) -> str:
    if _plain(subject) and len("Subject: ") + len(subject) <= _MAX_LINE:
        return subject
    # Encoded words (RFC 2047): non-ASCII, long, or carrying a line break a client put in the
    # candidate's name; a line break can never start a header of its own.
    return Header(subject, "utf-8").encode()


def _part(content_type: str, text: str, *, headers: str = "") -> str:
    """One text part: its own headers, the message's (for a single part), then base64."""
    body = base64.encodebytes(text.encode("utf-8")).decode("ascii")
    return (
        f'Content-Type: {content_type}; charset="utf-8"\n'
        "MIME-Version: 1.0\n"
        "Content-Transfer-Encoding: base64\n"
        f"{headers}\n{body}"
    )


def message_bytes(mail: Mail, *, date: datetime) -> bytes:
    """The message `build_message(mail, date=date)` makes, as bytes."""
    if not (_plain(mail.recipient) and _plain(mail.message_id)):
        return build_message(mail, date=date).as_bytes()
    headers = (
        f"From: {_from_header(mail.sender)}\n"
        f"To: {mail.recipient}\n"
        f"Subject: {_subject_header(mail.subject)}\n"
        f"Message-ID: {mail.message_id}\n"
        f"Date: {format_datetime(date)}\n"
        "Auto-Submitted: auto-generated\n"
    )
    if mail.html is None:
        return _part("text/plain", mail.text, headers=headers).encode()
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    return (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\n'
        "MIME-Version: 1.0\n"
        f"{headers}\n"
        f"--{boundary}\n{_part('text/plain', mail.text)}"
        f"--{boundary}\n{_part('text/html', mail.html)}"
        f"--{boundary}--\n"
    ).encode()
