"""The webhook signature against a known answer computed with openssl, not with the service's
code (tests/fixtures/webhook_signature_vector.json): the service's signer and verifier, and the
verifier that docs/webhooks.md gives receivers to copy."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.webhooks.signing import signature_header, verify

ROOT = Path(__file__).resolve().parents[2]
VECTOR: dict[str, Any] = json.loads(
    (ROOT / "tests" / "fixtures" / "webhook_signature_vector.json").read_text()
)
SECRET, TIMESTAMP, HEADER = VECTOR["secret"], VECTOR["timestamp"], VECTOR["signature_header"]
BODY = VECTOR["body"].encode()


def test_the_service_signs_the_known_answer() -> None:
    assert signature_header(SECRET, TIMESTAMP, BODY) == HEADER


def test_the_service_verifies_the_known_answer_and_nothing_else() -> None:
    assert verify(SECRET, HEADER, BODY, now=TIMESTAMP)
    assert verify(SECRET, HEADER, BODY, now=TIMESTAMP + 300)
    assert not verify(SECRET, HEADER, BODY, now=TIMESTAMP + 301)  # a replay
    assert not verify(SECRET, HEADER, BODY.replace(b"completed", b"failed"), now=TIMESTAMP)
    assert not verify("whsec_other", HEADER, BODY, now=TIMESTAMP)
    # The timestamp is signed too: another one in the header does not verify.
    moved = HEADER.replace(f"t={TIMESTAMP}", f"t={TIMESTAMP + 1}")
    assert not verify(SECRET, moved, BODY, now=TIMESTAMP + 1)


def documented_verifier() -> Callable[..., bool]:
    """The `verify` of docs/webhooks.md's Python block, as a receiver would copy it."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 (our own docs)
    verifier: Callable[..., bool] = namespace["verify"]
    return verifier


def test_the_documented_verifier_accepts_the_known_answer_and_refuses_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documented = documented_verifier()
    monkeypatch.setattr(time, "time", lambda: TIMESTAMP + 10)

    assert documented(SECRET, HEADER, BODY)
    assert not documented(SECRET, HEADER, BODY + b" ")
    assert not documented("whsec_other", HEADER, BODY)
    monkeypatch.setattr(time, "time", lambda: TIMESTAMP + 301)
    assert not documented(SECRET, HEADER, BODY)  # a replay
