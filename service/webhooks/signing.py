"""Webhook signatures: HMAC-SHA256 over the timestamp and the body, Stripe-like.

The replay window: `verify` accepts a delivery only if its signed timestamp is within
`tolerance_s` (300 s by default) of the receiver's clock, in either direction, so a captured
delivery cannot be replayed later than that; a receiver that must refuse a replay inside the
window too remembers the X-Scorer-Delivery ids it has seen for that long (a retry of a
delivery carries the same id, signed anew). The signature is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Scorer-Signature"
TIMESTAMP_HEADER = "X-Scorer-Timestamp"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Scorer-Signature value: `t=<timestamp>,v1=<hex>`."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` signs `body` under `secret` with a timestamp within `tolerance_s` of
    now, before or after (the replay window)."""
    if tolerance_s <= 0:
        raise ValueError("tolerance_s must be positive")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), signature(secret, timestamp, body))
