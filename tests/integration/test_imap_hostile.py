"""The hostile corpus (tests/data/hostile/) from alice to bob through a running bubble: real
SMTP submission (or, for what submission refuses, an envelope sealed and deposited
directly), bob's fetcher, then every FETCH item and SEARCH key over imaplib. Every
command answers a tagged OK and bob's session, and a new one, keep working."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.envelope import seal
from bridge.keys import AccountKeys, unseal_seed
from bridge.relay.client import RelayClient
from gateway.homes import Membership, gateway_database_url
from gateway.store.accounts import AccountRow, AccountStore
from gateway.store.db import open_engine
from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import imap_login

pytestmark = pytest.mark.integration

CORPUS_DIR = Path(__file__).parents[1] / "data" / "hostile"
CORPUS = {p.stem: p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.eml"))}
FETCH_BUDGET = 4096  # bob's imap_fetch_batch_octets: below the corpus's largest messages

FETCH_ITEMS = (
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2.1]",
    "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE CONTENT-TYPE)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)]",
    "BODY.PEEK[]<0.64>",
    "BODY.PEEK[TEXT]<10.20>",
    "RFC822.SIZE",
    "RFC822.HEADER",
    "FLAGS",
    "INTERNALDATE",
    "UID",
    "BODY[]",  # not PEEK: sets \Seen on every message
)
MACROS = ("ALL", "FAST", "FULL")
SEARCH_KEYS = (
    ("TEXT", "hostile"),
    ("BODY", "bottom"),
    ("HEADER", "Content-Type", "multipart"),
    ("FROM", "alice"),
    ("SUBJECT", "boundary"),
    ("OR", "BODY", "text", "NOT", "HEADER", "Content-Language", "en"),
)


@pytest.fixture(scope="module")
def bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """Relay, alice's and bob's gateways; bob's fetch budget is FETCH_BUDGET octets."""
    b = Bubble(tmp_path_factory.mktemp("hostile"))
    try:
        b.init()
        for user in ("alice", "bob"):
            b.add_account(user, f"{user}-hostile-password")
        with (b.root / "bob.toml").open("a") as config:
            config.write(f"imap_fetch_batch_octets = {FETCH_BUDGET}\n")
        b.start_gateway("alice", "bob")
        yield b
    finally:
        b.kill_all()


def submitted(smtp: smtplib.SMTP, sender: Account, to: str, raw: bytes) -> bool:
    """Submit over SMTP; False when submission refuses the message by policy."""
    try:
        assert smtp.sendmail(sender.address, [to], raw) == {}
    except smtplib.SMTPDataError as refused:
        assert refused.smtp_code == 550 and refused.smtp_error.startswith(b"5.7.1 ")
        return False
    return True


def account_row(account: Account, address: str) -> AccountRow:
    engine = open_engine(gateway_database_url(account.home))
    try:
        row = AccountStore(engine).get(address)
    finally:
        engine.dispose()
    assert row is not None
    return row


class DirectSender:
    """What a member's modified gateway could send: sealed and signed with alice's real
    keys, deposited on the relay with her gateway's credential, never seen by submission."""

    def __init__(self, bubble: Bubble, sender: Account, recipient: Account) -> None:
        row = account_row(sender, sender.address)
        self.keys = AccountKeys(unseal_seed(row.sealed_seed, sender.password.encode()))
        self.sender = sender.address
        self.recipient = account_row(recipient, recipient.address).public
        self.credential = Membership.load(sender.home).credential
        self.relay_url = bubble.relay_url

    def send(self, raw: bytes) -> None:
        envelope = seal(raw, sender=self.sender, sender_keys=self.keys, recipient=self.recipient)

        async def deposit() -> None:
            async with RelayClient(self.relay_url) as relay:
                await relay.deposit(envelope, self.credential)

        asyncio.run(deposit())


def wait_for_inbox(imap: imaplib.IMAP4, count: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        typ, data = imap.select("INBOX")
        assert typ == "OK"
        exists = int(data[0])
        if exists >= count or time.monotonic() > deadline:
            return exists
        time.sleep(0.2)


def fetch_responses(data: list[object]) -> list[int]:
    """The message numbers of the FETCH responses imaplib returned, in order."""
    numbers = []
    for item in data:
        first = item[0] if isinstance(item, tuple) else item
        assert isinstance(first, bytes)
        found = re.match(rb"(\d+) \(", first)
        if found:
            numbers.append(int(found.group(1)))
    return numbers


def test_every_hostile_message_is_served_and_the_session_goes_on(bubble: Bubble):
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    imap = imap_login(bob)  # unlocks bob's keys: his gateway fetches from now on
    try:
        refused = []
        direct = DirectSender(bubble, alice, bob)
        with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=alice.tls_context())
            smtp.login(alice.address, alice.password)
            for name, raw in CORPUS.items():
                if name.startswith("sealed-") or not submitted(smtp, alice, bob.address, raw):
                    refused.append(name)
                    direct.send(raw)
        assert {n for n in refused if n.startswith("sealed-")} == {
            n for n in CORPUS if n.startswith("sealed-")
        }
        assert wait_for_inbox(imap, len(CORPUS)) == len(CORPUS)
        every = list(range(1, len(CORPUS) + 1))

        for item in (*(f"({item})" for item in FETCH_ITEMS), *MACROS):
            typ, data = imap.fetch("1:*", item)
            assert typ == "OK", (item, data)
            assert fetch_responses(data) == every, item
        typ, data = imap.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        for response in (d for d in data if isinstance(d, tuple)):
            size = re.search(rb"RFC822.SIZE (\d+)", response[0])
            assert size is not None and len(response[1]) == int(size.group(1))
        for key in SEARCH_KEYS:
            assert imap.uid("SEARCH", *key)[0] == "OK", key
        imap.literal = "caf\xe9".encode()  # sent as a literal: 8-bit is not quotable
        assert imap.uid("SEARCH", "CHARSET", "UTF-8", "TEXT")[0] == "OK"
        assert imap.noop()[0] == "OK"
        assert imap.logout()[0] == "BYE"
    finally:
        with contextlib.suppress(OSError):
            imap.shutdown()

    again = imap_login(bob)  # and a new session opens the same mailbox
    assert again.select("INBOX") == ("OK", [str(len(CORPUS)).encode()])
    assert again.fetch("1:*", "(BODYSTRUCTURE)")[0] == "OK"
    again.logout()
    log = bubble.log_text("bob")
    assert "Traceback" not in log and "Internal server error" not in log
