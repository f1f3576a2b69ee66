"""What changed in a folder after a modseq (`StoreSession.changes_since`), and the
in-process notifier IDLE waits on (`ChangeNotifier`, `wait_for_change`)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from gateway.imap.backend import ChangeNotifier, FlagMode, MailboxNotFound
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)


@pytest.fixture
def alice(store_engine):
    return add_account(AccountStore(store_engine), ALICE)


def deliver(mailboxes: MailboxStore, keys, n: int) -> int:
    body = f"From: a@example.org\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()
    uid = mailboxes.deliver(ALICE, keys, "INBOX", body, internal_date=WHEN)
    assert uid is not None
    return uid


def test_changes_since_reports_only_what_changed(store_engine, alice):
    mailboxes = MailboxStore(store_engine)
    for n in range(1, 6):
        deliver(mailboxes, alice, n)
    session = mailboxes.session(ALICE, alice)
    start = session.snapshot("INBOX").highest_modseq

    nothing = session.changes_since("INBOX", start)
    assert (nothing.changed, nothing.expunged, nothing.highest_modseq) == ((), (), start)

    session.store_flags("INBOX", [2], frozenset({"\\Flagged"}), FlagMode.ADD)
    new = deliver(mailboxes, alice, 6)
    changes = session.changes_since("INBOX", start)
    assert [(m.uid, m.flags) for m in changes.changed] == [
        (2, frozenset({"\\Flagged"})),
        (new, frozenset()),
    ]
    assert changes.expunged == ()
    assert changes.uid_next == new + 1
    assert changes.highest_modseq == max(m.modseq for m in changes.changed)

    session.store_flags("INBOX", [1, 3], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert session.expunge("INBOX") == [1, 3]
    after = session.changes_since("INBOX", changes.highest_modseq)
    assert after.expunged == (1, 3)
    assert [m.uid for m in after.changed] == []  # the flag change is gone with its rows
    assert session.changes_since("INBOX", after.highest_modseq).expunged == ()
    # from the start: the expunged messages' changes are gone with them
    replay = session.changes_since("INBOX", start)
    assert [m.uid for m in replay.changed] == [2, new] and replay.expunged == (1, 3)


def test_changes_since_a_missing_folder(store_engine, alice):
    session = MailboxStore(store_engine).session(ALICE, alice)
    with pytest.raises(MailboxNotFound):
        session.changes_since("Nope", 0)


def test_wait_for_change_wakes_on_a_commit_of_another_store(store_engine, open_store, alice):
    """The fetcher's MailboxStore and the IMAP server's share the database's notifier,
    even on separate engines."""
    session = MailboxStore(store_engine).session(ALICE, alice)
    elsewhere = MailboxStore(open_store())
    seen = session.snapshot("INBOX").highest_modseq

    async def scenario() -> tuple[bool, bool, bool]:
        quiet = await session.wait_for_change("INBOX", seen, 0.05)
        waiting = asyncio.ensure_future(session.wait_for_change("inbox", seen, 30))
        await asyncio.sleep(0)
        await asyncio.to_thread(deliver, elsewhere, alice, 1)
        woken = await asyncio.wait_for(waiting, 30)
        # a change committed before the wait began is not missed
        already = await session.wait_for_change("INBOX", seen, 0.05)
        return quiet, woken, already

    assert asyncio.run(scenario()) == (False, True, True)


def test_the_notifier_wakes_only_for_newer_changes_of_its_key():
    notifier = ChangeNotifier()
    notifier.changed(("a", "INBOX"), 5)

    async def scenario() -> list[bool]:
        results = [await notifier.wait(("a", "INBOX"), 4, 0.01)]  # 5 > 4: at once
        results.append(await notifier.wait(("a", "INBOX"), 5, 0.01))  # nothing newer
        waiting = asyncio.ensure_future(notifier.wait(("a", "INBOX"), 5, 30))
        await asyncio.sleep(0)
        other = threading.Thread(target=notifier.changed, args=(("b", "INBOX"), 9))
        other.start()
        other.join()
        await asyncio.sleep(0.01)
        results.append(waiting.done())  # another key: still waiting
        threading.Thread(target=notifier.changed, args=(("a", "INBOX"), 6)).start()
        results.append(await asyncio.wait_for(waiting, 30))
        return results

    assert asyncio.run(scenario()) == [True, False, False, True]
