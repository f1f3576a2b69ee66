"""Refused envelopes fold into few notices: one per sender, or per account, per window.

A real relay (in process, on 127.0.0.1), accounts provisioned as `account add` does,
the gateway's real store and `Fetcher`; only the clock is injected, so the test can
step into the next window without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.envelope import seal
from bridge.keys import AccountKeys, KdfCost
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.fetcher import Fetcher
from gateway.homes import AdminHome, Membership, gateway_database_url
from gateway.keyring import KeyRing
from gateway.provision import add_account
from gateway.recipients import Recipients
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.mailbox import MailboxStore

pytestmark = pytest.mark.integration

DOMAIN = "test.bubble"
BOB, CAROL, DAVE = (f"{user}@{DOMAIN}" for user in ("bob", "carol", "dave"))
PASSWORD = "a long test password"
HOUR = 3600.0


@dataclass
class Scene:
    relay: RelayClient
    membership: Membership
    fetcher: Fetcher
    mailboxes: MailboxStore
    bob: AccountKeys
    carol: AccountKeys
    now: datetime

    def clock(self) -> datetime:
        return self.now

    async def deposit(self, envelope: bytes) -> None:
        await self.relay.deposit(envelope, self.membership.credential)

    def notices(self) -> int:
        return len(self.mailboxes.session(BOB, self.bob).snapshot("INBOX").messages)


@asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    admin = AdminHome.create(tmp_path / "admin", DOMAIN)
    server = RelayServer(RelayConfig(home=tmp_path / "relay", trusted_roots=(admin.root.public,)))
    await server.start()
    relay = RelayClient(server.url, timeout=30)
    try:
        home = tmp_path / "gateway"
        for address in (BOB, CAROL, DAVE):
            await add_account(address, gateway_home=home, admin=admin, relays=[server.url],
                              password=PASSWORD, cost=KdfCost.minimum())
        membership = Membership.load(home)
        engine = open_engine(gateway_database_url(home))
        accounts = AccountStore(engine)
        keyring = KeyRing(accounts)
        bob = keyring.unlock(BOB, PASSWORD)  # only bob fetches
        carol = KeyRing(accounts).unlock(CAROL, PASSWORD)  # a second ring: carol stays locked here
        recipients = Recipients(DirectoryCache(engine), [relay], membership.directory_key,
                                (membership.root_public,))
        mailboxes = MailboxStore(engine)
        fetcher = Fetcher(
            accounts=accounts, keyring=keyring, mailboxes=mailboxes, recipients=recipients,
            client_for=lambda url: relay, domain=DOMAIN, poll_interval=60,
            notice_fold_seconds=HOUR, clock=lambda: state.clock(),
        )
        state = Scene(relay, membership, fetcher, mailboxes, bob, carol,
                      datetime(2026, 1, 1, 10, 0, tzinfo=UTC))
        yield state
        engine.dispose()
    finally:
        await relay.close()
        await server.stop()


def tampered(sender: str, sender_keys: AccountKeys, recipient: AccountKeys) -> bytes:
    envelope = bytearray(seal(b"Subject: hi\r\n\r\nhello\r\n", sender=sender,
                              sender_keys=sender_keys, recipient=recipient.public))
    envelope[-1] ^= 1  # one bit of the ciphertext: it no longer opens
    return bytes(envelope)


def test_fifty_envelopes_that_do_not_open_make_one_notice_per_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with scene(tmp_path) as s:
            bad = [tampered(CAROL, s.carol, s.bob) for _ in range(50)]
            await asyncio.gather(*(s.deposit(envelope) for envelope in bad))
            assert await s.fetcher.fetch_all() == 0
            assert s.notices() == 1
            assert await s.relay.list(s.bob.mailbox) == []  # all acknowledged
            assert all(s.mailboxes.seen_envelope(BOB, e[4:20]) for e in bad)  # and recorded

            s.now += timedelta(minutes=59)
            await s.deposit(tampered(CAROL, s.carol, s.bob))
            await s.fetcher.fetch_all()
            assert s.notices() == 1  # still the same window

            s.now += timedelta(hours=1)
            for _ in range(2):
                await s.deposit(tampered(CAROL, s.carol, s.bob))
            await s.fetcher.fetch_all()
            assert s.notices() == 2  # the next window has its own notice

    asyncio.run(scenario())


def test_forged_senders_fold_per_claimed_sender(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with scene(tmp_path) as s:
            impostor = AccountKeys.generate()  # signs as carol or dave, keys not theirs
            for sender in (CAROL, DAVE):
                for _ in range(5):
                    await s.deposit(seal(b"Subject: x\r\n\r\nx\r\n", sender=sender,
                                         sender_keys=impostor, recipient=s.bob.public))
            await s.deposit(tampered(CAROL, s.carol, s.bob))
            await s.fetcher.fetch_all()
            # one for carol's name, one for dave's, one for the envelope of no known sender
            assert s.notices() == 3
            assert await s.relay.list(s.bob.mailbox) == []

    asyncio.run(scenario())
