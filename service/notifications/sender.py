"""Email backends: `file` (one .eml per mail), `console` (stdout) and `smtp` (aiosmtplib)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import sys
import tempfile
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from service.config import Settings
from service.database import utcnow


@dataclass(frozen=True)
class Mail:
    """A rendered mail, as stored in the outbox."""

    message_id: str
    sender: str
    recipient: str
    subject: str
    text: str
    html: str | None


class DeliveryError(Exception):
    """A send failed; `permanent` when retrying cannot help (the server refused for good)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EmailSender(Protocol):
    """Hands a mail over to its destination."""

    async def send(self, mail: Mail) -> None:
        """Deliver `mail`, or raise DeliveryError (or any error, treated as transient)."""
        ...


@functools.cache
def sender_domain(email_from: str) -> str:
    """The domain of the From address, for Message-IDs."""
    address = parseaddr(email_from)[1]
    return address.rpartition("@")[2] or "localhost"


def build_message(mail: Mail) -> Message:
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
    message["Date"] = format_datetime(utcnow())
    # Tells autoresponders not to answer (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    return message


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileSender:
    """Writes each mail to `<directory>/<message-id>.eml`, atomically (tmp file, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, mail: Mail) -> None:
        """Write the mail; a second send of the same mail overwrites the same file."""
        name = re.sub(r"[^A-Za-z0-9._@-]", "_", mail.message_id.strip("<>")) + ".eml"
        data = build_message(mail).as_bytes()
        await asyncio.to_thread(_write_atomically, self.directory, name, data)


class ConsoleSender:
    """Prints each mail to stdout: a development backend, not the log (logs carry no bodies)."""

    async def send(self, mail: Mail) -> None:
        """Print the mail."""
        text = build_message(mail).as_string()
        await asyncio.to_thread(_print, f"{text}\n{'-' * 72}\n")


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class SmtpSender:
    """Sends through an SMTP server with aiosmtplib: STARTTLS, implicit TLS or none; login."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tls_context: ssl.SSLContext | None = None
        if settings.smtp_tls != "none":
            cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self._tls_context = ssl.create_default_context(cafile=cafile)

    async def send(self, mail: Mail) -> None:
        """One SMTP conversation for one mail."""
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                build_message(mail),
                sender=parseaddr(mail.sender)[1],
                recipients=[mail.recipient],
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password if settings.smtp_username else None,
                use_tls=settings.smtp_tls == "tls",
                start_tls=settings.smtp_tls == "starttls",
                tls_context=self._tls_context,
                timeout=settings.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(
                f"recipient refused ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            # The server's own words may quote the mail: keep only the code. Retried even on
            # 5xx: a refused login or a full mailbox is fixed by someone, and attempts are capped.
            raise DeliveryError(f"{type(exc).__name__} {exc.code}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def build_sender(settings: Settings) -> EmailSender:
    """The backend named by SCORER_EMAIL_BACKEND."""
    if settings.email_backend == "smtp":
        return SmtpSender(settings)
    if settings.email_backend == "console":
        return ConsoleSender()
    return FileSender(settings.email_dir)
