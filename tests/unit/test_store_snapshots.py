"""SELECT's folder metadata from the process's cache (`gateway.store.snapshots`): always
what a full read would give, whatever changed in between and through whichever path."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.imap.backend import FlagMode, FolderSnapshot, MailSession, MessageMeta
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from gateway.store.snapshots import SnapshotCache
from tests.unit.store_support import ALICE, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)


def deliver(mailboxes: MailboxStore, keys, n: int, folder: str = "INBOX") -> int:
    body = f"From: a@example.org\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()
    uid = mailboxes.deliver(ALICE, keys, folder, body, internal_date=WHEN)
    assert uid is not None
    return uid


def full_read(session: MailSession, folder: str) -> tuple[MessageMeta, ...]:
    """Every message's metadata, read without the cache (all changed after modseq 0)."""
    return session.changes_since(folder, 0).changed


def test_a_cached_snapshot_follows_every_change(store_engine, open_store):
    keys = add_account(AccountStore(store_engine), ALICE)
    mailboxes = MailboxStore(store_engine)
    for n in range(6):
        deliver(mailboxes, keys, n)
    session = mailboxes.session(ALICE, keys)
    first = session.snapshot("INBOX")
    assert session.snapshot("INBOX") == first  # unchanged: the same answer
    # Changes through another engine, as another process would make them.
    other = MailboxStore(open_store()).session(ALICE, keys)
    other.store_flags("INBOX", [2, 5], frozenset({"\\Deleted", "$Later"}), FlagMode.ADD)
    other.expunge("INBOX", [2])
    deliver(mailboxes, keys, 7)
    other.move("INBOX", [3], "Archive")
    other.copy("INBOX", [1], "INBOX")
    now = session.snapshot("INBOX")
    assert now.messages == full_read(session, "INBOX")
    assert [m.uid for m in now.messages] == [1, 4, 5, 6, 7, 8]
    assert now.highest_modseq > first.highest_modseq and now.uid_next == 9
    assert session.snapshot("Archive").messages == full_read(session, "Archive")


def test_a_folder_made_again_or_renamed_is_read_afresh(store_engine):
    keys = add_account(AccountStore(store_engine), ALICE)
    mailboxes = MailboxStore(store_engine)
    session = mailboxes.session(ALICE, keys)
    session.create_folder("Lists")
    session.append("Lists", b"Subject: one\r\n\r\nx\r\n")
    assert len(session.snapshot("Lists").messages) == 1
    session.delete_folder("Lists")
    session.create_folder("Lists")
    again = session.snapshot("Lists")
    assert again.messages == ()
    deliver(mailboxes, keys, 1)
    assert len(session.snapshot("INBOX").messages) == 1
    session.rename_folder("INBOX", "Old")  # INBOX's messages move out, logged as expunged
    assert session.snapshot("INBOX").messages == ()
    renamed = session.snapshot("Old")
    assert renamed.name == "Old" and renamed.messages == full_read(session, "Old")


def _snapshot(uid_validity: int, count: int, modseq: int = 1) -> FolderSnapshot:
    metas = tuple(MessageMeta(n, frozenset(), WHEN, 10, modseq) for n in range(1, count + 1))
    return FolderSnapshot(
        "INBOX", uid_validity, count + 1, modseq, first_recent_uid=count + 1, messages=metas
    )


def test_the_cache_is_bounded_and_keyed_by_uidvalidity():
    cache = SnapshotCache(max_messages=5)
    cache.put((1, 1), _snapshot(7, 3))
    assert cache.get((1, 1), 7) == _snapshot(7, 3)
    assert cache.get((1, 1), 8) is None and cache.get((2, 1), 7) is None
    cache.put((1, 2), _snapshot(7, 2))
    cache.put((1, 3), _snapshot(7, 2))  # over 5 messages: the least recently used goes
    assert cache.get((1, 1), 7) is None and cache.get((1, 3), 7) is not None
    cache.put((1, 3), _snapshot(7, 1, modseq=0))  # an older one never replaces a newer
    assert cache.get((1, 3), 7) == _snapshot(7, 2)
