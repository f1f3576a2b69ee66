"""Push: a gateway that never polls still gets new mail at once, through a held listing."""

from __future__ import annotations

import dataclasses
import imaplib
import re
import secrets
import time
import urllib.request
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble
from tests.integration.test_end_to_end import compose, fetch_all, imap_login, submit

pytestmark = pytest.mark.integration


def _expect_one(imap: imaplib.IMAP4, canary: str) -> None:
    """Wait, in this IMAP session (no new login), for the one message holding `canary`."""
    deadline = time.monotonic() + 30
    while not (bodies := fetch_all(imap)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(bodies) == 1 and canary.encode() in bodies[0]
    imap.logout()


def test_mail_arrives_through_the_held_listing_without_polling(tmp_path: Path) -> None:
    # An hour between polls, and one IMAP login (a login also starts a fetch) before
    # the mail is sent: it can only come through the listing bob's gateway holds.
    bubble = Bubble(tmp_path, poll_interval=3600)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
        bob = bubble.add_account("bob", "bob-" + secrets.token_hex(4))
        bubble.start_gateway("alice", "bob")
        imap = imap_login(bob)
        assert fetch_all(imap) == []
        canary = "push-" + secrets.token_hex(6)
        assert submit(alice, compose(alice, bob.address, canary, "pushed")) == {}
        _expect_one(imap, canary)
    finally:
        bubble.kill_all()


def _held_listings(bubble: Bubble) -> float:
    with urllib.request.urlopen(f"{bubble.relay_url}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    found = re.search(r"^sealgate_relay_held_listings (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_a_gateway_holds_at_most_push_connections_and_polls_the_rest(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        # One gateway (alice's home) serves three accounts and holds at most two listings.
        for user in ("alice", "bob", "carol"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}", gateway="alice",
                               settings={"push_connections": 2})
        dave = bubble.add_account("dave", "dave-" + secrets.token_hex(4))
        bubble.start_gateway("alice", "dave")
        served = bubble.accounts["alice"]
        users = [dataclasses.replace(bubble.accounts[u], smtp_port=served.smtp_port,
                                     imap_port=served.imap_port)
                 for u in ("alice", "bob", "carol")]
        sessions = [imap_login(user) for user in users]  # all three unlocked
        deadline = time.monotonic() + 30
        while _held_listings(bubble) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a third would have been opened by now (the fetcher runs every 0.3 s)
        assert _held_listings(bubble) == 2
        canary = "bound-" + secrets.token_hex(6)
        for user in users:
            assert submit(dave, compose(dave, user.address, canary, "to each")) == {}
        for imap in sessions:  # the held ones by push, the third by polling
            _expect_one(imap, canary)
    finally:
        bubble.kill_all()
