"""Email backends: `file` (one .eml per mail), `console` (stdout) and `smtp` (aiosmtplib)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import sys
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from service.config import Settings
from service.database import utcnow
from service.notifications.mime import Mail, message_bytes

__all__ = ["ConsoleSender", "DeliveryError", "EmailSender", "FileSender", "Mail", "SmtpSender"]


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


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    # The temporary name is the final one's and this process's: unique without drawing random
    # names (tempfile's cost more than the write), and two workers sending the same mail again
    # after a lost lease each rename a whole file of their own.
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileSender:
    """Writes each mail to `<directory>/<message-id>.eml`, atomically (tmp file, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, mail: Mail) -> None:
        """Write the mail; a second send of the same mail overwrites the same file."""
        name = re.sub(r"[^A-Za-z0-9._@-]", "_", mail.message_id.strip("<>")) + ".eml"
        data = message_bytes(mail, date=utcnow())
        await asyncio.to_thread(_write_atomically, self.directory, name, data)


class ConsoleSender:
    """Prints each mail to stdout: a development backend, not the log (logs carry no bodies)."""

    async def send(self, mail: Mail) -> None:
        """Print the mail."""
        text = message_bytes(mail, date=utcnow()).decode("utf-8", "replace")
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
                message_bytes(mail, date=utcnow()),
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
