"""What the SQL store adds to the mail operations that every backend shares
(tests/unit/test_mail_ops.py): the standard folders, also for accounts made before some
of them existed; UIDVALIDITY, UIDs, flags, dates and subscriptions across reopening; the
APPEND size limit; concurrent MOVEs. On SQLite, and on PostgreSQL when it answers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, update
from sqlmodel import col

from gateway.imap.backend import CannotDoThat, FolderInfo, MessageTooLarge
from gateway.store.db import ADDED_COLUMNS, writing
from gateway.store.mailbox import MailboxStore
from gateway.store.models import Folder, MailboxState, Subscription
from tests.unit.store_support import ALICE

pytest_plugins = ["tests.unit.store_fixtures"]

STANDARD = ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]
MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
WHEN = datetime(2023, 11, 2, 18, 4, 5, tzinfo=timezone(timedelta(hours=-5)))


def message(n: int) -> bytes:
    return f"From: a@example.org\r\nSubject: note {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def session(store_engine, alice):
    return MailboxStore(store_engine).session(ALICE, alice)


def listing(session) -> dict[str, tuple[str, ...]]:
    return {info.name: info.attributes for info in session.list_folders()}


def test_every_account_has_the_special_use_folders_subscribed(session):
    assert session.list_folders() == [
        FolderInfo("INBOX", ("\\HasNoChildren",)),
        FolderInfo("Sent", ("\\HasNoChildren", "\\Sent")),
        FolderInfo("Drafts", ("\\HasNoChildren", "\\Drafts")),
        FolderInfo("Trash", ("\\HasNoChildren", "\\Trash")),
        FolderInfo("Junk", ("\\HasNoChildren", "\\Junk")),
        FolderInfo("Archive", ("\\HasNoChildren", "\\Archive")),
    ]
    assert session.list_subscribed() == sorted(STANDARD)


def test_an_account_made_before_junk_and_archive_gets_them_and_keeps_its_folders(
    store_engine, alice
):
    # An account as earlier versions left it: four standard folders, one of the user's,
    # no subscriptions and no folder bookkeeping.
    with writing(store_engine) as connection:
        connection.execute(delete(Folder).where(col(Folder.name).in_(["Junk", "Archive"])))
        connection.execute(update(Folder).where(col(Folder.name) == "Trash").values(
            name="Projects", special_use=None))
        connection.execute(delete(MailboxState))
        connection.execute(delete(Subscription))
    session = MailboxStore(store_engine).session(ALICE, alice)
    names = [info.name for info in session.list_folders()]
    assert names == ["INBOX", "Sent", "Drafts", "Projects", "Trash", "Junk", "Archive"]
    assert listing(session)["Junk"] == ("\\HasNoChildren", "\\Junk")
    assert session.list_subscribed() == sorted(names)
    # A deleted standard folder comes back at the next login, empty and with a new
    # UIDVALIDITY; the user's unsubscribing of another is respected.
    old_trash = session.snapshot("Trash").uid_validity
    session.delete_folder("Trash")
    session.unsubscribe("Projects")
    again = MailboxStore(store_engine).session(ALICE, alice)
    assert again.snapshot("Trash").uid_validity > old_trash
    assert "Projects" not in again.list_subscribed()


def test_a_name_created_again_gets_a_greater_uidvalidity_and_starts_empty(open_store, alice):
    session = MailboxStore(open_store()).session(ALICE, alice)
    validities = []
    for _ in range(3):  # within one second: the clock alone would repeat itself
        session.create_folder("Lists")
        session.append("Lists", MESSAGE)
        validities.append(session.snapshot("Lists").uid_validity)
        session.delete_folder("Lists")
    assert validities == sorted(set(validities))
    reopened = MailboxStore(open_store()).session(ALICE, alice)
    reopened.create_folder("Lists")
    created = reopened.snapshot("Lists")
    assert created.uid_validity > validities[-1]
    assert created.messages == () and created.uid_next == 1
    assert all(0 < v < 2**32 for v in validities)


def test_subscriptions_persist_and_need_no_folder(open_store, alice):
    session = MailboxStore(open_store()).session(ALICE, alice)
    session.subscribe("Lists/Later")
    session.subscribe("Lists/Later")  # twice is no error
    session.unsubscribe("Junk")
    with pytest.raises(CannotDoThat):
        session.unsubscribe("Junk")
    with pytest.raises(CannotDoThat):
        session.subscribe("bad//name")
    expected = sorted([*STANDARD, "Lists/Later"])
    expected.remove("Junk")
    assert session.list_subscribed() == expected
    assert MailboxStore(open_store()).session(ALICE, alice).list_subscribed() == expected

def test_append_over_the_size_limit_or_empty_is_refused(store_engine, alice):
    session = MailboxStore(store_engine, max_message_bytes=100).session(ALICE, alice)
    assert session.append("INBOX", b"x" * 100).uid == 1
    with pytest.raises(MessageTooLarge) as too_big:
        session.append("INBOX", b"x" * 101)
    assert too_big.value.code == "TOOBIG"
    with pytest.raises(CannotDoThat):
        session.append("INBOX", b"")
    with pytest.raises(CannotDoThat):
        session.append("INBOX", message(1), internal_date=datetime(2024, 1, 1))  # naive
    assert [m.uid for m in session.snapshot("INBOX").messages] == [1]


def test_appended_mail_survives_reopening_the_store(open_store, alice):
    session = MailboxStore(open_store()).session(ALICE, alice)
    session.append("Drafts", message(1), frozenset({"\\Draft", "pending"}), WHEN)
    before = session.snapshot("Drafts")

    reopened = MailboxStore(open_store()).session(ALICE, alice)
    after = reopened.snapshot("Drafts")
    assert (after.uid_validity, after.uid_next) == (before.uid_validity, before.uid_next)
    assert after.messages == before.messages
    assert after.messages[0].flags == {"\\Draft", "pending"}
    assert after.messages[0].internal_date == WHEN
    assert after.messages[0].internal_date.utcoffset() == WHEN.utcoffset()
    (opened,) = reopened.fetch("Drafts", [1])
    assert opened.meta.internal_date.utcoffset() == WHEN.utcoffset()
    assert reopened.append("Drafts", message(2)).uid == 2


def test_concurrent_moves_in_both_directions_lose_and_duplicate_nothing(store_engine, alice):
    mailboxes = MailboxStore(store_engine)
    setup = mailboxes.session(ALICE, alice)
    for n in range(20):
        setup.append("INBOX", message(n))
        setup.append("Archive", message(100 + n))
    errors: list[BaseException] = []

    def mover(source: str, destination: str) -> None:
        session = mailboxes.session(ALICE, alice)
        try:
            for _ in range(5):
                uids = [m.uid for m in session.snapshot(source).messages][:3]
                session.move(source, uids, destination)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=mover, args=pair)
               for pair in (("INBOX", "Archive"), ("Archive", "INBOX"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    bodies = sorted(
        m.body for folder in ("INBOX", "Archive")
        for m in setup.fetch(folder, [x.uid for x in setup.snapshot(folder).messages])
    )
    assert bodies == sorted([message(n) for n in range(20)] + [message(100 + n) for n in range(20)])


def test_a_store_made_before_internal_offset_gets_the_column_and_keeps_its_mail(
    open_store, alice
):
    engine = open_store()
    session = MailboxStore(engine).session(ALICE, alice)
    session.append("INBOX", message(1), internal_date=WHEN)
    # The tables as stores made before the columns have them (SQLite >= 3.35 drops).
    with writing(engine) as connection:
        for table in {table for table, _, _ in ADDED_COLUMNS}:
            connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN internal_offset")
    engine.dispose()

    upgraded = MailboxStore(open_store()).session(ALICE, alice)
    (old,) = upgraded.fetch("INBOX", [1])
    assert old.body == message(1)
    assert old.meta.internal_date == WHEN  # the instant, shown in UTC: its zone was never kept
    assert old.meta.internal_date.utcoffset() == timedelta(0)
    assert upgraded.append("INBOX", message(2), internal_date=WHEN).uid == 2
    (new,) = upgraded.fetch("INBOX", [2])
    assert new.meta.internal_date.utcoffset() == WHEN.utcoffset()
    open_store()  # opening an upgraded store again changes nothing
