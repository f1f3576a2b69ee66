"""Failover, operator style: accounts with several home relays, every part its own process.

The relays' storage is a parameter (`RELAY_STORES`): each relay with its own SQLite
home, or every relay on one shared PostgreSQL database (`--db`) once the relay has it.
"""

from __future__ import annotations

import email
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import compose, fetch_all, imap_login, submit
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration

_SUBJECT_TOKEN = re.compile(rb"^Subject: failover (token-[0-9a-f]{12})\r?$", re.MULTILINE)


def _relay_has_db_flag() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "relay", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    return "--db" in help_text


@pytest.fixture(params=["sqlite-per-relay", "postgresql-shared"])
def relay_db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: each relay its own SQLite home; else the one database every relay serves."""
    if request.param == "sqlite-per-relay":
        yield None
        return
    if not _relay_has_db_flag():
        pytest.skip("`sealgate relay serve` has no --db (PostgreSQL storage) in this build")
    with fresh_schema("failover") as url:
        yield url


def subject_tokens(bodies: list[bytes]) -> list[bytes]:
    """The token of each message's Subject: one per message."""
    return [found.group(1) for body in bodies for found in _SUBJECT_TOKEN.finditer(body)]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` held; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def token_message(alice: Account, bob: Account, token: str) -> email.message.EmailMessage:
    msg = compose(alice, bob.address, token, f"failover {token}")
    del msg["Cc"]  # one envelope per message: counts in bob's INBOX are messages
    return msg


def outbox_size(account: Account) -> int:
    with sqlite3.connect(account.home / "gateway.db") as db:
        return int(db.execute("SELECT count(*) FROM outbox_item").fetchone()[0])


def two_relay_bubble(
    root: Path, relay_db: str | None, **gateway: float | int
) -> tuple[Bubble, str]:
    """A relay, a second relay (its URL returned), alice and bob homed on both in that
    order, and their gateways (with `gateway` settings) running."""
    bubble = Bubble(root, relay_db=relay_db)
    bubble.init()
    second = bubble.add_relay("relay2")
    for user in ("alice", "bob"):
        bubble.add_account(user, f"{user}-{secrets.token_hex(4)}",
                           relays=[bubble.relay_url, second], settings=dict(gateway))
    bubble.start_gateway("alice", "bob")
    return bubble, second


def test_sigkill_of_the_primary_relay_during_a_burst_loses_and_doubles_nothing(
    tmp_path: Path, relay_db: str | None
) -> None:
    """Mail submitted after the kill reaches bob through the second relay while the
    primary is down. A deposit the primary acknowledged in the instant before it died,
    before bob's gateway fetched it, is held there (acknowledged means durable, not
    delivered) and arrives when the primary comes back; nothing is lost or shown twice."""
    bubble, _ = two_relay_bubble(tmp_path, relay_db)
    imap = None
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        imap = imap_login(bob)  # bob is unlocked: his gateway holds a listing on both relays
        sent: list[str] = []
        count = 40

        def burst() -> None:
            for _ in range(count):
                token = "token-" + secrets.token_hex(6)
                assert submit(alice, token_message(alice, bob, token)) == {}
                sent.append(token)
                time.sleep(0.05)

        sender = threading.Thread(target=burst)
        sender.start()
        wait_for(lambda: len(sent) >= count // 3, 60, "a third of the burst submitted")
        bubble.services["relay"].kill()  # SIGKILL, mid-burst; returns once it is dead
        # The submission in progress at the kill may have reached the primary; every
        # later one was submitted with the primary dead and can only go to the second.
        after_kill = len(sent) + 1
        wait_for(lambda: len(sent) > after_kill, 30, "a submission after the kill")
        first_after = sent[after_kill].encode()
        wait_for(lambda: first_after in subject_tokens(fetch_all(imap)), 30,
                 "the first message after the kill in bob's INBOX")
        sender.join(120)
        assert len(sent) == count
        assert after_kill < count

        received: list[bytes] = []

        def arrived(tokens: list[str]) -> Callable[[], bool]:
            def check() -> bool:
                received[:] = subject_tokens(fetch_all(imap))
                return set(received) >= {t.encode() for t in tokens}
            return check

        wait_for(arrived(sent[after_kill:]), 60,
                 "every message submitted after the kill in bob's INBOX")
        assert len(received) == len(set(received))  # none twice
        held = {t.encode() for t in sent} - set(received)
        assert held <= {t.encode() for t in sent[:after_kill]}  # only mail from before the kill

        # The primary comes back with whatever it held when it died: bob's gateway takes
        # what it had not fetched and drops what it already has; nothing shows twice.
        bubble.start_relay()
        wait_for(arrived(sent), 60, f"all {count} messages in bob's INBOX")
        time.sleep(3)
        assert sorted(subject_tokens(fetch_all(imap))) == sorted(t.encode() for t in sent)
    finally:
        if imap is not None:
            imap.logout()  # never raises; closes the socket also when a check failed
        bubble.kill_all()


def test_a_relay_that_never_answers_is_skipped_after_one_timeout(tmp_path: Path) -> None:
    bubble, _ = two_relay_bubble(tmp_path, None, relay_timeout=2.0)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        with imap_login(bob) as imap:
            # The primary gives way to a socket that listens but never accepts:
            # connections open, no answer ever comes.
            bubble.stop_relay()
            with socket.socket() as silent:
                silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                silent.bind(("127.0.0.1", bubble.relay_port))
                silent.listen(64)
                tokens = ["token-" + secrets.token_hex(6) for _ in range(10)]
                for token in tokens:
                    assert submit(alice, token_message(alice, bob, token)) == {}
                received: list[bytes] = []

                def all_arrived() -> bool:
                    received[:] = subject_tokens(fetch_all(imap))
                    return len(received) >= len(tokens)

                wait_for(all_arrived, 60, "all messages through the second relay")
                assert sorted(received) == sorted(t.encode() for t in tokens)
                # A timeout sets the silent relay aside; the deposits after it skip it.
                timeouts = bubble.log_text("alice").count("relay request failed (TimeoutError)")
                assert 1 <= timeouts < len(tokens)
    finally:
        bubble.kill_all()


def test_a_507_from_every_relay_is_retried_until_one_has_room(tmp_path: Path) -> None:
    # A quota smaller than any envelope: the only relay answers 507 to every deposit.
    bubble = Bubble(tmp_path, relay_args=("--quota", "1KiB"))
    try:
        bubble.init()
        for user in ("alice", "bob"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}",
                               settings={"retry_initial": 0.2, "retry_max": 0.5})
        bubble.start_gateway("alice", "bob")
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        token = "token-" + secrets.token_hex(6)
        assert submit(alice, token_message(alice, bob, token)) == {}
        wait_for(lambda: bubble.log_text("alice").count("relay answered 507") >= 5, 60,
                  "five refused deposits")
        assert outbox_size(alice) == 1  # kept, not given up as a permanent failure

        bubble.stop_relay()
        bubble.services["relay"].args = [
            a for a in bubble.services["relay"].args if a not in ("--quota", "1KiB")
        ]
        bubble.start_relay()
        with imap_login(bob) as imap:
            wait_for(lambda: subject_tokens(fetch_all(imap)) == [token.encode()], 60,
                     "the message delivered once the relay has room")
        assert outbox_size(alice) == 0
    finally:
        bubble.kill_all()
