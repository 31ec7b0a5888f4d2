"""The chaos run's SMTP server: a real SMTP conversation (aiosmtpd) that records each accepted
mail's Message-ID, one a line, before it answers 250; a process of its own, so that stopping it
is an SMTP outage as a sender sees one (connection refused).

Run: python -m bench.chaos.sink --port PORT --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP

_HEADERS = BytesHeaderParser()


class Recorder:
    """Appends the Message-ID of every mail to the file, flushed before the 250."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: one mail received."""
        message_id = _HEADERS.parsebytes(envelope.original_content)["Message-ID"] or "<none>"
        self.out.write(f"{message_id}\n")
        self.out.flush()
        return "250 OK"


async def serve(port: int, out_path: Path) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with out_path.open("a", encoding="utf-8") as out:
        recorder = Recorder(out)
        server = await loop.create_server(
            lambda: SMTP(recorder, hostname="chaos-sink"), "127.0.0.1", port, backlog=1024
        )
        try:
            await stop.wait()
        finally:
            server.close()


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.out))


if __name__ == "__main__":
    main()
