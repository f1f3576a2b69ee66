"""`delivery_give_up` with real processes: alice's gateway (a `sealgate gateway serve`
process) cannot reach the relay for longer than the setting, gives her message up and
puts an "undeliverable" notice in her INBOX, naming the recipient and the subject from
her own note; once the relay is back, nothing of that message reaches bob."""

from __future__ import annotations

import email
import email.policy
import secrets
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import fetch_all, imap_login, submit

pytestmark = pytest.mark.integration


def undelivered_notice(account: Account, timeout: float = 30.0) -> str:
    """The text of the one message in `account`'s INBOX, a notice of undelivered mail,
    once it is there."""
    imap = imap_login(account)
    try:
        deadline = time.monotonic() + timeout
        while not (notices := fetch_all(imap)) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        imap.logout()
    (raw,) = notices
    notice = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(notice, EmailMessage)
    assert notice["Subject"] == "A message you sent was not delivered"
    return str(notice.get_content())


def test_a_message_no_relay_takes_in_time_is_given_up_with_a_notice(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4), settings={
            "delivery_give_up": 2.0, "retry_initial": 0.5, "retry_max": 0.5,
        })
        bob = bubble.add_account("bob", "bob-" + secrets.token_hex(4))
        bubble.start_gateway("alice", "bob")
        bubble.stop_relay()
        token = "give-up-" + secrets.token_hex(6)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            alice.address, bob.address, f"about {token}")
        message.set_content("body")
        assert submit(alice, message) == {}
        body = undelivered_notice(alice)
        assert f"To:        {bob.address}" in body and f"Subject:   about {token}" in body
        assert "refused it or could not be reached" in body
        assert "given up" in bubble.log_text("alice")
        bubble.start_relay()
        imap = imap_login(bob)
        try:
            assert not any(token.encode() in m for m in fetch_all(imap))
        finally:
            imap.logout()
    finally:
        bubble.kill_all()
