"""Log configuration: JSON lines by default. Log records carry ids and counts, never content."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

# color_message: uvicorn's ANSI-coloured copy of the message.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

# The id of the request being served, set by the middleware; every log line carries it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


# Libraries that log what the service must not: SQL parameters (aiosqlite, SQLAlchemy), request
# bodies and URLs (openai, httpx). They speak at warning and above only, whatever the level.
QUIET_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy", "openai", "httpx", "httpcore", "aiohttp")


def configure_logging(*, level: str, fmt: str) -> None:
    """Route the service's and uvicorn's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every statement with its parameters at debug level: transcripts, email
    # bodies and addresses. It stays quiet whatever the service's level.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
