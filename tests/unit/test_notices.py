"""gateway.notices: the forged-sender notice names the signed sender and the claim, no more."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from gateway.notices import forged_sender_notice

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def text(claimed: str | None) -> str:
    raw = forged_sender_notice(
        account="bob@demo.bubble", domain="demo.bubble", envelope_id=bytes(16),
        sender="alice@demo.bubble", claimed=claimed,
        reason="The Sender address must be the sending account", when=WHEN,
    )
    notice = email.message_from_bytes(raw, policy=email.policy.default)
    assert notice["From"].addresses[0].addr_spec == "postmaster@demo.bubble"
    assert notice["Auto-Submitted"] == "auto-generated"
    body = notice.get_content().replace("\r\n", "\n")
    assert "\n  alice@demo.bubble\n" in body and "00" * 16 in body
    assert "Sender address must be the sending account" in body
    return body


def test_the_claimed_address_is_named() -> None:
    assert "claimed to come from\n\n  boss@demo.bubble\n" in text("boss@demo.bubble")


@pytest.mark.parametrize("claimed", [None, "boss@x\nInjected: 1", "b\u202eoss@x", "x" * 300])
def test_a_claim_that_is_not_a_plain_address_is_not_shown(claimed: str | None) -> None:
    body = text(claimed)
    assert "could not show correctly" in body
    assert "Injected" not in body and "\u202e" not in body and "x" * 300 not in body
