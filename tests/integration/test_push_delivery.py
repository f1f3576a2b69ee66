"""Push: a gateway that never polls still gets new mail at once, through a held listing."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble
from tests.integration.test_end_to_end import compose, fetch_all, imap_login, submit

pytestmark = pytest.mark.integration


def test_mail_arrives_through_the_held_listing_without_polling(tmp_path: Path) -> None:
    # An hour between polls, and one IMAP login (a login also starts a fetch) before
    # the mail is sent: it can only come through the listing bob's gateway holds.
    bubble = Bubble(tmp_path, poll_interval=3600)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
        bob = bubble.add_account("bob", "bob-" + secrets.token_hex(4))
        bubble.start_gateway("alice")
        bubble.start_gateway("bob")
        imap = imap_login(bob)
        assert fetch_all(imap) == []
        canary = "push-" + secrets.token_hex(6)
        assert submit(alice, compose(alice, bob.address, canary, "pushed")) == {}
        deadline = time.monotonic() + 30
        while not (bodies := fetch_all(imap)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(bodies) == 1 and canary.encode() in bodies[0]
        imap.logout()
    finally:
        bubble.kill_all()
