"""The verifier the project ships enforces the replay window, in both directions."""

from __future__ import annotations

import pytest

from service.webhooks.signing import DEFAULT_TOLERANCE_S, signature_header, verify

BODY = b'{"type":"evaluation.completed"}'
SIGNED_AT = 1_700_000_000


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (SIGNED_AT, True),
        (SIGNED_AT + DEFAULT_TOLERANCE_S, True),
        (SIGNED_AT - DEFAULT_TOLERANCE_S, True),
        (SIGNED_AT + DEFAULT_TOLERANCE_S + 1, False),
        (SIGNED_AT - DEFAULT_TOLERANCE_S - 1, False),
        (SIGNED_AT + 86_400, False),
    ],
    ids=["at-once", "at-the-end", "clock-behind", "too-late", "from-the-future", "a-day-later"],
)
def test_a_delivery_verifies_only_within_the_window(now: int, accepted: bool) -> None:
    header = signature_header("whsec_test", SIGNED_AT, BODY)

    assert verify("whsec_test", header, BODY, now=now) is accepted


def test_a_narrower_window_is_the_receivers_choice() -> None:
    header = signature_header("whsec_test", SIGNED_AT, BODY)

    assert verify("whsec_test", header, BODY, tolerance_s=30, now=SIGNED_AT + 30)
    assert not verify("whsec_test", header, BODY, tolerance_s=30, now=SIGNED_AT + 31)
    with pytest.raises(ValueError, match="tolerance_s"):
        verify("whsec_test", header, BODY, tolerance_s=0, now=SIGNED_AT)


def test_a_timestamp_changed_to_reopen_the_window_breaks_the_signature() -> None:
    old = signature_header("whsec_test", SIGNED_AT, BODY)
    replayed = old.replace(f"t={SIGNED_AT}", f"t={SIGNED_AT + 3600}")

    assert not verify("whsec_test", replayed, BODY, now=SIGNED_AT + 3600)
