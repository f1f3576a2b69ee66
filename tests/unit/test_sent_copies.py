"""Sent copies (`gateway.smtp.sent`) on a real store: each copy commits in the outbox
transaction that queues its message's envelopes (concurrent sessions sharing commits),
and a copy that cannot be prepared refuses its own message only."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

from sqlalchemy import Engine

from bridge.keys import AccountKeys
from gateway.smtp.queueing import OutboxWriter
from gateway.smtp.sent import SentCopies
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from gateway.store.outbox import Outbox, OutboxWrite
from tests.unit.store_support import ALICE, BOB, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

BIG = 64 * 1024 * 1024


class CountingOutbox(Outbox):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.writes = 0

    def write(self, writes: Sequence[OutboxWrite]) -> None:
        self.writes += 1
        super().write(writes)


def sent(store: MailboxStore, address: str, keys: AccountKeys) -> list[bytes]:
    session = store.session(address, keys)
    uids = [m.uid for m in session.snapshot("Sent").messages]
    return [m.body for m in session.fetch("Sent", uids)]


def messages(count: int) -> list[bytes]:
    return [f"Subject: {n}\r\n\r\nbody {n}\r\n".encode() for n in range(count)]


def envelope(_: object) -> tuple[bytes, bytes, tuple[str, ...]]:
    return secrets.token_bytes(16), secrets.token_bytes(64), ("http://127.0.0.1:1",)


def submit(
    writer: OutboxWriter, copies: SentCopies, address: str, keys: AccountKeys, message: bytes
) -> asyncio.Future[int]:
    return asyncio.ensure_future(
        writer.submit([None], envelope, lambda: copies.prepare(address, keys, message))
    )


def test_copies_commit_with_their_envelopes_and_share_commits(store_engine: Engine) -> None:
    accounts = AccountStore(store_engine)
    alice = add_account(accounts, ALICE)
    outbox = CountingOutbox(store_engine)
    writer, copies = OutboxWriter(outbox, part_bytes=BIG), SentCopies(accounts)

    async def send_all() -> None:
        await asyncio.gather(*(submit(writer, copies, ALICE, alice, m) for m in messages(20)))

    asyncio.run(send_all())
    assert outbox.writes < 20
    assert outbox.pending_count() == 20
    assert sorted(sent(MailboxStore(store_engine), ALICE, alice)) == sorted(messages(20))


def test_a_copy_that_cannot_be_prepared_refuses_its_message_alone(store_engine: Engine) -> None:
    accounts = AccountStore(store_engine)
    alice, bob = add_account(accounts, ALICE), add_account(accounts, BOB)
    outbox = Outbox(store_engine)
    writer, copies = OutboxWriter(outbox, part_bytes=BIG), SentCopies(accounts)

    async def send_all() -> list[BaseException | int]:
        jobs = [submit(writer, copies, ALICE, alice, m) for m in messages(5)]
        jobs.insert(2, submit(writer, copies, BOB, alice, b"Subject: wrong keys\r\n\r\nx\r\n"))
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcome = asyncio.run(send_all())
    assert isinstance(outcome.pop(2), Exception) and outcome == [1] * 5
    assert outbox.pending_count() == 5  # nothing queued for the refused message
    assert sorted(sent(MailboxStore(store_engine), ALICE, alice)) == sorted(messages(5))
    assert sent(MailboxStore(store_engine), BOB, bob) == []


def test_a_deleted_sent_folder_is_made_again(store_engine: Engine) -> None:
    accounts = AccountStore(store_engine)
    alice = add_account(accounts, ALICE)
    store = MailboxStore(store_engine)
    session = store.session(ALICE, alice)
    session.delete_folder("Sent")  # IMAP DELETE; the next login would make it again
    assert "Sent" not in [f.name for f in session.list_folders()]
    writer = OutboxWriter(Outbox(store_engine), part_bytes=BIG)

    async def send() -> int:
        return await submit(writer, SentCopies(accounts), ALICE, alice, messages(1)[0])

    assert asyncio.run(send()) == 1
    assert sent(store, ALICE, alice) == messages(1)
