"""`sealgate relay drain` / `undrain`, operator style: every part its own process."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest

from tests.bubble_processes import Account, sealgate
from tests.integration.test_end_to_end import fetch_all, imap_login, submit
from tests.integration.test_relay_failover import (
    outbox_size,
    subject_tokens,
    token_message,
    two_relay_bubble,
    wait_for,
)

pytestmark = pytest.mark.integration


def _envelopes_on(url: str) -> int:
    status = json.loads(sealgate("relay", "status", "--url", url, "--json").stdout)
    return int(status["envelopes"])


def _relays_taken(account: Account) -> list[str]:
    with sqlite3.connect(account.home / "gateway.db") as db:
        rows = db.execute("SELECT relay FROM sent_envelope ORDER BY created_at").fetchall()
    return [row[0] for row in rows]


def _send(alice: Account, bob: Account) -> str:
    token = "token-" + secrets.token_hex(6)
    assert submit(alice, token_message(alice, bob, token)) == {}
    wait_for(lambda: outbox_size(alice) == 0, 30, "the deposit")
    return token


def test_a_drained_relay_gets_no_deposits_and_is_still_fetched(tmp_path: Path) -> None:
    bubble, second = two_relay_bubble(tmp_path, None, directory_sync_interval=0.5)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        primary = bubble.relay_url
        first = _send(alice, bob)  # bob is locked: it waits on the primary
        assert (_envelopes_on(primary), _envelopes_on(second)) == (1, 0)

        out = sealgate("relay", "drain", primary, "--bubble", bubble.admin).stdout
        assert out.startswith(f"relay {primary} drained (statement version 1)")
        wait_for(lambda: f"relay {primary} is drained" in bubble.log_text("alice"), 30,
                  "alice's gateway learning of the drain")
        during = _send(alice, bob)
        assert (_envelopes_on(primary), _envelopes_on(second)) == (1, 1)
        assert _relays_taken(alice) == [primary, second]

        # bob's gateway reads both: what the drained relay still held comes too.
        imap = imap_login(bob)
        wait_for(lambda: sorted(subject_tokens(fetch_all(imap))) == sorted(
            t.encode() for t in (first, during)), 30, "both messages in bob's INBOX")
        wait_for(lambda: _envelopes_on(primary) == 0, 30, "the drained relay emptied")

        out = sealgate("relay", "undrain", primary, "--bubble", bubble.admin).stdout
        assert out.startswith(f"relay {primary} undrained (statement version 2)")
        wait_for(lambda: f"relay {primary} is no longer drained" in bubble.log_text("alice"),
                  30, "alice's gateway learning of the undrain")
        after = _send(alice, bob)
        assert _relays_taken(alice) == [primary, second, primary]
        wait_for(lambda: len(subject_tokens(fetch_all(imap))) == 3, 30, "the third message")
        assert sorted(subject_tokens(fetch_all(imap))) == sorted(
            t.encode() for t in (first, during, after))
        imap.logout()
    finally:
        bubble.kill_all()


def test_drain_refuses_a_bad_url_or_an_unreachable_relay(tmp_path: Path) -> None:
    sealgate("bubble", "init", "--home", tmp_path / "admin", "--domain", "test.bubble")
    bad = sealgate("relay", "drain", "ftp://relay", "--bubble", tmp_path / "admin",
                   check=False)
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1)
    assert "relay URL must start with http:// or https://" in bad.stderr
    down = sealgate("relay", "drain", "http://127.0.0.1:9", "--bubble", tmp_path / "admin",
                    check=False)
    assert (down.returncode, down.stderr.count("\n")) == (1, 1)
    assert down.stderr.startswith("sealgate: error: cannot publish the drain statement")
