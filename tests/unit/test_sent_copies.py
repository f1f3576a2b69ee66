"""Sent copies (`gateway.smtp.sent`) on a real store: concurrent copies share commits,
and one that cannot be stored fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from bridge.keys import AccountKeys
from gateway.smtp.sent import SentCopies
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE, BOB, add_account

pytest_plugins = ["tests.unit.store_fixtures"]


class CountingStore(MailboxStore):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.writes = 0

    def deliver_copies(self, folder: str, copies: Sequence[tuple[str, AccountKeys, bytes]],
                       **options: Any) -> None:
        self.writes += 1
        super().deliver_copies(folder, copies, **options)


def sent(store: MailboxStore, address: str, keys: AccountKeys) -> list[bytes]:
    session = store.session(address, keys)
    uids = [m.uid for m in session.snapshot("Sent").messages]
    return [m.body for m in session.fetch("Sent", uids)]


def messages(count: int) -> list[bytes]:
    return [f"Subject: {n}\r\n\r\nbody {n}\r\n".encode() for n in range(count)]


def test_concurrent_copies_share_commits(store_engine: Engine) -> None:
    alice = add_account(AccountStore(store_engine), ALICE)
    store = CountingStore(store_engine)
    copies = SentCopies(store)

    async def send_all() -> None:
        await asyncio.gather(*(copies.keep(ALICE, alice, m) for m in messages(20)))

    asyncio.run(send_all())
    assert store.writes < 20
    assert sorted(sent(store, ALICE, alice)) == sorted(messages(20))


def test_a_copy_that_cannot_be_stored_fails_alone(store_engine: Engine) -> None:
    accounts = AccountStore(store_engine)
    alice, bob = add_account(accounts, ALICE), add_account(accounts, BOB)
    copies = SentCopies(MailboxStore(store_engine))

    async def send_all() -> list[BaseException | None]:
        jobs = [copies.keep(ALICE, alice, m) for m in messages(5)]
        jobs.insert(2, copies.keep(BOB, alice, b"Subject: wrong keys\r\n\r\nx\r\n"))
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcome = asyncio.run(send_all())
    assert isinstance(outcome.pop(2), Exception) and outcome == [None] * 5
    assert sorted(sent(MailboxStore(store_engine), ALICE, alice)) == sorted(messages(5))
    assert sent(MailboxStore(store_engine), BOB, bob) == []
