"""The sender's gateway asks its relay what became of each envelope and tells the sender
of the lost ones: a real relay (in process, on 127.0.0.1, with a quota of one envelope),
accounts provisioned as `account add` does, the real outbox, DeliveryWorker and
UndeliveredChecker."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bridge.envelope import OUTER_HEADER_LEN, new_envelope_id, seal
from bridge.keys import AccountKeys, KdfCost
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.delivery import DeliveryWorker
from gateway.homes import AdminHome, Membership, gateway_database_url
from gateway.keyring import KeyRing
from gateway.provision import add_account, revoke_account
from gateway.recipients import Recipients
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.mailbox import MailboxStore
from gateway.store.outbox import Outbox
from gateway.store.sent import SentLog
from gateway.undelivered import UndeliveredChecker, seal_note

pytestmark = pytest.mark.integration

DOMAIN = "test.bubble"
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
PASSWORD = "a long test password"


def recipients_of(engine: Engine, membership: Membership, *relays: RelayClient) -> Recipients:
    return Recipients(DirectoryCache(engine), relays, membership.directory_key,
                      (membership.root_public,))


@dataclass
class InProcess:
    """A relay served in this process and one gateway home holding some accounts."""

    admin: AdminHome
    server: RelayServer
    relay: RelayClient
    membership: Membership
    engine: Engine


@contextlib.asynccontextmanager
async def in_process(
    tmp_path: Path, *addresses: str, quota: int | None = None
) -> AsyncIterator[InProcess]:
    admin = AdminHome.create(tmp_path / "admin", DOMAIN)
    server = RelayServer(RelayConfig(home=tmp_path / "relay",
                                     trusted_roots=(admin.root.public,), quota=quota))
    await server.start()
    relay = RelayClient(server.url, timeout=30)
    try:
        home = tmp_path / "gateway"
        for address in addresses:
            await add_account(address, gateway_home=home, admin=admin, relays=[server.url],
                              password=PASSWORD, cost=KdfCost.minimum())
        engine = open_engine(gateway_database_url(home))
        try:
            yield InProcess(admin, server, relay, Membership.load(home), engine)
        finally:
            engine.dispose()
    finally:
        await relay.close()
        await server.stop()


def inbox_of(mailboxes: MailboxStore, address: str, keys: AccountKeys) -> list[bytes]:
    session = mailboxes.session(address, keys)
    uids = [m.uid for m in session.snapshot("INBOX").messages]
    return [m.body for m in session.fetch("INBOX", uids)]


def test_lost_envelopes_become_notices_once_the_sender_is_unlocked(tmp_path: Path) -> None:
    probe = seal(b"Subject: x\r\n\r\nx\r\n", sender=ALICE,
                 sender_keys=AccountKeys.generate(), recipient=AccountKeys.generate().public)

    async def scenario() -> None:
        async with in_process(tmp_path, ALICE, BOB, quota=len(probe)) as bubble:
            server, relay, membership, engine = (
                bubble.server, bubble.relay, bubble.membership, bubble.engine)
            accounts = AccountStore(engine)
            alice = KeyRing(accounts).unlock(ALICE, PASSWORD)  # for sealing, as SMTP AUTH does
            bob = KeyRing(accounts).unlock(BOB, PASSWORD)
            keyring = KeyRing(accounts)  # the checker's ring: alice still locked
            mailboxes = MailboxStore(engine)
            outbox, sent = Outbox(engine), SentLog(engine)
            items = []
            for subject in ("first", "second", "third"):
                envelope_id = new_envelope_id()
                message = f"Subject: {subject}\r\n\r\nbody\r\n".encode()
                envelope = seal(message, sender=ALICE, sender_keys=alice,
                                recipient=bob.public, envelope_id=envelope_id)
                assert len(envelope) == len(probe) > OUTER_HEADER_LEN
                items.append((envelope_id, envelope, (server.url,),
                              seal_note(ALICE, alice, envelope_id, BOB, subject)))
            delivery = DeliveryWorker(outbox, membership.credential, lambda url: relay,
                                      retry_initial=1, retry_max=1, status_check_interval=0)
            for item in items:  # one at a time: the quota holds one, the older goes
                outbox.put([item])
                assert await delivery.run_once()
            first, second, third = (item[0] for item in items)
            await relay.ack(bob.mailbox, third)  # bob's gateway fetched the newest

            checker = UndeliveredChecker(
                sent=sent, keyring=keyring, mailboxes=mailboxes,
                credential=membership.credential, client_for=lambda url: relay,
                domain=DOMAIN, interval=60, check_interval=0.001, forget_after=3600,
                recipients=recipients_of(engine, membership, relay), outbox=outbox,
            )

            def inbox() -> list[bytes]:
                return inbox_of(mailboxes, ALICE, alice)

            await checker.run_once()
            assert inbox() == []  # alice is locked: the notices wait
            assert [e.envelope_id for e in sent.lost_for(ALICE)] == [first, second]
            assert sent.due(datetime.now(UTC) + timedelta(seconds=1), 10) == []  # all settled

            keyring.unlock(ALICE, PASSWORD)
            await checker.run_once()
            notices = [email.message_from_bytes(m, policy=email.policy.default) for m in inbox()]
            bodies = sorted(n.get_content() for n in notices)
            assert len(bodies) == 2
            assert "Subject:   first" in bodies[0] and "Subject:   second" in bodies[1]
            assert all(f"To:        {BOB}" in b and "storage was full" in b for b in bodies)
            assert sent.lost_for(ALICE) == []
            await checker.run_once()
            assert len(inbox()) == 2  # told once

    asyncio.run(scenario())


def test_pending_is_asked_again_delivered_and_long_unknown_are_forgotten(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with in_process(tmp_path, ALICE, BOB) as bubble:
            server, relay, membership, engine = (
                bubble.server, bubble.relay, bubble.membership, bubble.engine)
            accounts = AccountStore(engine)
            alice = KeyRing(accounts).unlock(ALICE, PASSWORD)
            bob = KeyRing(accounts).unlock(BOB, PASSWORD)
            outbox, sent = Outbox(engine), SentLog(engine)
            stored, never = new_envelope_id(), new_envelope_id()
            envelope = seal(b"Subject: s\r\n\r\nb\r\n", sender=ALICE, sender_keys=alice,
                            recipient=bob.public, envelope_id=stored)
            outbox.put([
                (stored, envelope, (server.url,), seal_note(ALICE, alice, stored, BOB, "s")),
                (never, b"never sent", (server.url,), seal_note(ALICE, alice, never, BOB, "n")),
            ])
            await relay.deposit(envelope, membership.credential)
            entries = {e.envelope_id: e.id for e in outbox.due(datetime.now(UTC), 2**30)}
            outbox.delivered(*entries.values(), relays={i: server.url for i in entries.values()})

            def checker(forget_after: float) -> UndeliveredChecker:
                return UndeliveredChecker(
                    sent=sent, keyring=KeyRing(accounts), mailboxes=MailboxStore(engine),
                    credential=membership.credential, client_for=lambda url: relay,
                    domain=DOMAIN, interval=60, check_interval=0.001, forget_after=forget_after,
                    recipients=recipients_of(engine, membership, relay), outbox=outbox,
                )

            def asked() -> set[bytes]:
                soon = datetime.now(UTC) + timedelta(seconds=1)
                return {check.envelope_id for check in sent.due(soon, 10)}

            await checker(forget_after=3600).check_due()
            assert asked() == {stored, never}  # pending, and unknown but recent: ask again
            await relay.ack(bob.mailbox, stored)
            await checker(forget_after=1e-6).check_due()
            assert asked() == set()  # delivered: forgotten; unknown for long: forgotten
            assert sent.lost_for(ALICE) == []

    asyncio.run(scenario())


def test_an_envelope_for_a_revoked_recipient_is_given_up_with_a_notice(tmp_path: Path) -> None:
    """bob's relay is unreachable, so alice's envelope waits in the outbox; bob is then
    revoked in the directory: the envelope leaves the outbox and alice is told, naming
    bob and the subject; one for carol, not revoked, keeps waiting."""
    carol = f"carol@{DOMAIN}"

    async def scenario() -> None:
        unreachable = RelayClient("http://127.0.0.1:9", timeout=5)  # discard port: refused
        async with in_process(tmp_path, ALICE, BOB, carol) as bubble:
            relay, membership, engine = bubble.relay, bubble.membership, bubble.engine
            accounts = AccountStore(engine)
            keyring = KeyRing(accounts)
            alice = keyring.unlock(ALICE, PASSWORD)
            outbox, mailboxes = Outbox(engine), MailboxStore(engine)
            waiting = {}
            for to, subject in ((BOB, "for bob"), (carol, "for carol")):
                envelope_id = new_envelope_id()
                recipient = KeyRing(accounts).unlock(to, PASSWORD)
                envelope = seal(f"Subject: {subject}\r\n\r\nbody\r\n".encode(), sender=ALICE,
                                sender_keys=alice, recipient=recipient.public,
                                envelope_id=envelope_id)
                outbox.put([(envelope_id, envelope, (unreachable.url,),
                             seal_note(ALICE, alice, envelope_id, to, subject))])
                waiting[to] = envelope_id
            delivery = DeliveryWorker(outbox, membership.credential, lambda url: unreachable,
                                      retry_initial=60, retry_max=60)
            assert not await delivery.run_once()  # both deposits failed: retried later
            recipients = recipients_of(engine, membership, relay)
            checker = UndeliveredChecker(
                sent=SentLog(engine), keyring=keyring, mailboxes=mailboxes,
                credential=membership.credential, client_for=lambda url: relay,
                domain=DOMAIN, interval=60, check_interval=3600, forget_after=3600,
                recipients=recipients, outbox=outbox,
            )
            await checker.run_once()
            assert inbox_of(mailboxes, ALICE, alice) == []  # nobody revoked yet
            await revoke_account(BOB, admin=bubble.admin, relays=[bubble.server.url])
            await recipients.sync()
            await checker.run_once()
            (raw,) = inbox_of(mailboxes, ALICE, alice)
            body = email.message_from_bytes(raw, policy=email.policy.default).get_content()
            assert f"To:        {BOB}" in body and "Subject:   for bob" in body
            assert "revoked in the bubble directory" in body and "Given up:" in body
            left = outbox.due(datetime.now(UTC) + timedelta(hours=1), 2**30)
            assert [e.envelope_id for e in left] == [waiting[carol]]
            await checker.run_once()
            assert len(inbox_of(mailboxes, ALICE, alice)) == 1  # told once
        await unreachable.close()

    asyncio.run(scenario())
