from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from bridge.keys import AccountKeys
from gateway.imap.backend import AuthenticationFailed, FlagMode, MailboxNotFound, StorageFailed
from gateway.keyring import KeyRing
from gateway.store.accounts import AccountStore
from gateway.store.db import InvalidValue, KeyMismatch, SessionClosed, UnknownAccount, writing
from gateway.store.folder_rows import (
    STREAMED_BLOB,
    folder_row,
    prepare_message,
    store_prepared_many,
)
from gateway.store.mailbox import MailboxStore, StoreAuthenticator
from gateway.store.models import Message
from tests.unit.store_support import ALICE, BOB, add_account

WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=timezone(timedelta(hours=2)))

pytest_plugins = ["tests.unit.store_fixtures"]


def message(n: int, size: int = 200) -> bytes:
    head = f"From: a@example.org\r\nSubject: test {n}\r\n\r\n".encode()
    return head + (b"x" * max(0, size - len(head) - 2)) + b"\r\n"


def deliver_all(mailboxes, keys, bodies, folder="INBOX"):
    return [mailboxes.deliver(ALICE, keys, folder, body, internal_date=WHEN) for body in bodies]


def test_deliver_snapshot_fetch_round_trip(mailboxes, alice):
    bodies = [message(1, 100), message(2, 5000), message(3, 64)]
    assert deliver_all(mailboxes, alice, bodies) == [1, 2, 3]

    session = mailboxes.session(ALICE, alice)
    snap = session.snapshot("INBOX")
    assert snap.name == "INBOX"
    assert snap.uid_next == 4
    assert [meta.uid for meta in snap.messages] == [1, 2, 3]
    assert [meta.size for meta in snap.messages] == [len(body) for body in bodies]
    assert all(meta.internal_date == WHEN for meta in snap.messages)
    assert all(meta.internal_date.tzinfo is not None for meta in snap.messages)
    assert snap.highest_modseq == max(meta.modseq for meta in snap.messages)

    fetched = session.fetch("INBOX", [3, 1, 99, 1])
    assert [stored.meta.uid for stored in fetched] == [1, 3]
    assert [stored.body for stored in fetched] == [bodies[0], bodies[2]]
    assert fetched[0].meta == snap.messages[0]


def test_a_batch_with_a_large_message_keeps_its_order_and_contents(
    store_engine, mailboxes, alice
):
    """A message sealed over `STREAMED_BLOB` goes in on its own on SQLite, its blob
    written in pieces; the small ones around it still get the UIDs in batch order."""
    account = AccountStore(store_engine).get(ALICE)
    assert account is not None
    account_id = account.id
    bodies = [message(1), message(2, 3 * STREAMED_BLOB + 12345), message(3), message(4)]
    prepared = [prepare_message(alice.storage_key, account_id, body) for body in bodies]
    with writing(store_engine) as connection:
        folder_id = folder_row(connection, account_id, "INBOX", lock=True).id
        batch = [(p, WHEN, ["\\Seen"] if n == 1 else []) for n, p in enumerate(prepared)]
        uids = store_prepared_many(connection, folder_id, batch)
    assert uids == [1, 2, 3, 4]
    fetched = mailboxes.session(ALICE, alice).fetch("INBOX", uids)
    assert [m.body for m in fetched] == bodies
    assert [m.meta.flags for m in fetched] == [set(), {"\\Seen"}, set(), set()]


def test_fetch_of_many_uids_spans_query_chunks(mailboxes, alice):
    bodies = [message(n, 120) for n in range(520)]
    deliver_all(mailboxes, alice, bodies)
    fetched = mailboxes.session(ALICE, alice).fetch("INBOX", list(range(1, 521)))
    assert [stored.body for stored in fetched] == bodies


def test_folders_are_separate_and_inbox_is_case_insensitive(mailboxes, alice):
    assert deliver_all(mailboxes, alice, [message(1)], folder="inbox") == [1]
    assert deliver_all(mailboxes, alice, [message(2)], folder="Sent") == [1]
    session = mailboxes.session(ALICE, alice)
    assert [m.uid for m in session.snapshot("InBoX").messages] == [1]
    assert session.fetch("Sent", [1])[0].body == message(2)
    with pytest.raises(MailboxNotFound):
        session.snapshot("sent")
    with pytest.raises(MailboxNotFound):
        session.fetch("Nowhere", [1])
    with pytest.raises(MailboxNotFound):
        mailboxes.deliver(ALICE, alice, "Nowhere", message(3), internal_date=WHEN)


def test_uids_ascend_and_uidvalidity_stays_across_reopening(open_store, alice, mailboxes):
    deliver_all(mailboxes, alice, [message(1), message(2)])
    before = mailboxes.session(ALICE, alice).snapshot("INBOX")

    reopened = MailboxStore(open_store())
    assert reopened.deliver(ALICE, alice, "INBOX", message(3), internal_date=WHEN) == 3
    after = reopened.session(ALICE, alice).snapshot("INBOX")
    assert after.uid_validity == before.uid_validity
    assert after.uid_next == 4
    assert [meta.uid for meta in after.messages] == [1, 2, 3]
    assert after.highest_modseq > before.highest_modseq


def test_flags_add_remove_replace_bump_modseq(mailboxes, alice):
    deliver_all(mailboxes, alice, [message(1), message(2), message(3)])
    session = mailboxes.session(ALICE, alice)
    start = session.snapshot("INBOX").highest_modseq

    added = session.store_flags("INBOX", [1, 2, 7], frozenset({"\\seen", "$Work"}), FlagMode.ADD)
    assert [meta.uid for meta in added] == [1, 2]
    assert all(meta.flags == {"\\Seen", "$Work"} for meta in added)
    assert all(meta.modseq == start + 1 for meta in added)
    snap = session.snapshot("INBOX")
    assert snap.highest_modseq == start + 1
    assert snap.messages[2].flags == frozenset() and snap.messages[2].modseq < start + 1

    removed = session.store_flags("INBOX", [2], frozenset({"$Work"}), FlagMode.REMOVE)
    assert removed[0].flags == {"\\Seen"} and removed[0].modseq == start + 2

    replaced = session.store_flags(
        "INBOX", [1, 3], frozenset({"\\Flagged", "\\Recent"}), FlagMode.REPLACE
    )
    assert [meta.flags for meta in replaced] == [{"\\Flagged"}, {"\\Flagged"}]
    assert all(meta.modseq == start + 3 for meta in replaced)

    # A store that changes nothing takes no modseq.
    same = session.store_flags("INBOX", [1], frozenset({"\\Flagged"}), FlagMode.ADD)
    assert same[0].modseq == start + 3
    assert session.snapshot("INBOX").highest_modseq == start + 3
    assert [meta.flags for meta in session.snapshot("INBOX").messages] == [
        {"\\Flagged"}, {"\\Seen"}, {"\\Flagged"},
    ]


@pytest.mark.parametrize("flag", ["two words", "", "bad\x01", "tab\t"])
def test_unstorable_flags_are_refused(mailboxes, alice, flag):
    deliver_all(mailboxes, alice, [message(1)])
    session = mailboxes.session(ALICE, alice)
    with pytest.raises(StorageFailed) as refused:  # toward IMAP: NO [SERVERBUG]
        session.store_flags("INBOX", [1], frozenset({flag}), FlagMode.ADD)
    assert isinstance(refused.value.__cause__, InvalidValue)
    with pytest.raises(InvalidValue):
        mailboxes.deliver(ALICE, alice, "INBOX", message(2), internal_date=WHEN,
                          flags=frozenset({flag}))


def test_deliver_keeps_initial_flags(mailboxes, alice):
    uid = mailboxes.deliver(ALICE, alice, "Sent", message(1), internal_date=WHEN,
                            flags=frozenset({"\\Seen"}))
    assert mailboxes.session(ALICE, alice).snapshot("Sent").messages[0].flags == {"\\Seen"}
    assert uid == 1


def test_expunge_removes_only_deleted_messages(mailboxes, alice):
    deliver_all(mailboxes, alice, [message(n) for n in range(1, 6)])
    session = mailboxes.session(ALICE, alice)
    assert session.expunge("INBOX") == []
    unchanged = session.snapshot("INBOX").highest_modseq

    session.store_flags("INBOX", [2, 3, 5], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert session.expunge("INBOX", [3, 4, 5]) == [3, 5]
    snap = session.snapshot("INBOX")
    assert [meta.uid for meta in snap.messages] == [1, 2, 4]
    assert snap.highest_modseq == unchanged + 2
    assert session.expunge("INBOX") == [2]
    assert [meta.uid for meta in session.snapshot("INBOX").messages] == [1, 4]
    assert session.fetch("INBOX", [2, 3]) == []
    # UIDs are never reused.
    assert mailboxes.deliver(ALICE, alice, "INBOX", message(6), internal_date=WHEN) == 6


def test_same_envelope_is_delivered_once(mailboxes, alice):
    envelope_id = b"\x01" * 16
    first = mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=WHEN,
                              envelope_id=envelope_id)
    again = mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=WHEN,
                              envelope_id=envelope_id)
    assert (first, again) == (1, None)
    assert mailboxes.seen_envelope(ALICE, envelope_id)
    assert len(mailboxes.session(ALICE, alice).snapshot("INBOX").messages) == 1
    assert mailboxes.record_rejected(ALICE, envelope_id) is False


def test_rejections_fold_into_one_notice_per_key_and_window(mailboxes, alice):
    def refuse(n: int, key: bytes, window: int) -> bool:
        return mailboxes.record_rejected(ALICE, bytes([n]) * 16, key, window)

    assert refuse(1, b"", 7) is True  # the first of the window: a notice
    assert [refuse(n, b"", 7) for n in range(2, 40)] == [False] * 38
    assert refuse(40, b"carol", 7) is True  # another sender, its own notice
    assert refuse(41, b"carol", 7) is False
    assert refuse(1, b"", 8) is False  # an envelope seen before never makes a notice
    assert refuse(42, b"", 6) is False  # nor a window older than the last notice's
    assert refuse(43, b"", 8) is True
    assert all(mailboxes.seen_envelope(ALICE, bytes([n]) * 16) for n in range(1, 44))


def test_rejected_envelope_is_never_delivered(mailboxes, alice):
    envelope_id = b"\x02" * 16
    assert not mailboxes.seen_envelope(ALICE, envelope_id)
    assert mailboxes.record_rejected(ALICE, envelope_id) is True
    assert mailboxes.record_rejected(ALICE, envelope_id) is False
    assert mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=WHEN,
                             envelope_id=envelope_id) is None
    assert mailboxes.session(ALICE, alice).snapshot("INBOX").messages == ()


def test_envelope_ids_are_remembered_per_account(store_engine, mailboxes, alice):
    bob = add_account(AccountStore(store_engine), BOB)
    envelope_id = b"\x03" * 16
    assert mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=WHEN,
                             envelope_id=envelope_id) == 1
    assert mailboxes.deliver(BOB, bob, "INBOX", message(1), internal_date=WHEN,
                             envelope_id=envelope_id) == 1


def test_concurrent_deliveries_get_distinct_uids_and_one_copy_per_envelope(mailboxes, alice):
    uids: list[int | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(10):
                uid = mailboxes.deliver(ALICE, alice, "INBOX", message(n * 100 + i),
                                        internal_date=WHEN)
                dup = mailboxes.deliver(ALICE, alice, "INBOX", message(i), internal_date=WHEN,
                                        envelope_id=bytes([i]) * 16)
                with lock:
                    uids.extend([uid, dup])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    delivered = [uid for uid in uids if uid is not None]
    assert sorted(delivered) == list(range(1, 51))  # 40 plain + 10 distinct envelopes
    assert uids.count(None) == 30


def test_concurrent_flag_changes_are_not_lost(mailboxes, alice):
    deliver_all(mailboxes, alice, [message(1)])
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        session = mailboxes.session(ALICE, alice)
        try:
            for i in range(5):
                session.store_flags("INBOX", [1], frozenset({f"k{n}-{i}"}), FlagMode.ADD)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (meta,) = mailboxes.session(ALICE, alice).snapshot("INBOX").messages
    assert meta.flags == {f"k{n}-{i}" for n in range(4) for i in range(5)}
    assert meta.modseq == mailboxes.session(ALICE, alice).snapshot("INBOX").highest_modseq


def test_unknown_account_and_foreign_keys_are_refused(store_engine, mailboxes, alice):
    with pytest.raises(UnknownAccount):
        mailboxes.deliver(BOB, alice, "INBOX", message(1), internal_date=WHEN)
    with pytest.raises(UnknownAccount):
        mailboxes.seen_envelope(BOB, b"\x00" * 16)
    with pytest.raises(KeyMismatch):
        mailboxes.deliver(ALICE, AccountKeys.generate(), "INBOX", message(1), internal_date=WHEN)
    with pytest.raises(KeyMismatch):
        mailboxes.session(ALICE, AccountKeys.generate())


def test_naive_internal_date_is_refused(mailboxes, alice):
    with pytest.raises(InvalidValue):
        mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=datetime(2024, 1, 1))


def test_closed_session_refuses_work(mailboxes, alice):
    session = mailboxes.session(ALICE, alice)
    session.close()
    for call in (lambda: session.snapshot("INBOX"), lambda: session.fetch("INBOX", [1])):
        with pytest.raises(StorageFailed) as refused:
            call()
        assert isinstance(refused.value.__cause__, SessionClosed)


def test_authenticator_unlocks_and_opens_a_session(store_engine, mailboxes):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE, "pw-alice")
    mailboxes.deliver(ALICE, keys, "INBOX", message(1), internal_date=WHEN)
    authenticator = StoreAuthenticator(KeyRing(accounts), mailboxes)

    session = authenticator.login("Alice@Example.org", "pw-alice")
    assert session.address == ALICE
    assert session.fetch("INBOX", [1])[0].body == message(1)
    with pytest.raises(AuthenticationFailed):
        authenticator.login(ALICE, "pw-bob")
    with pytest.raises(AuthenticationFailed):
        authenticator.login(BOB, "pw-alice")


def sealed_of(store_engine, uid: int) -> bytes:
    with Session(store_engine) as session:
        return session.exec(select(Message.sealed).where(col(Message.uid) == uid)).one()


def set_sealed(store_engine, uid: int, sealed: bytes) -> None:
    with Session(store_engine) as session:
        session.execute(update(Message).where(col(Message.uid) == uid).values(sealed=sealed))
        session.commit()


def test_a_message_that_does_not_open_is_skipped_and_logged(store_engine, mailboxes, alice, caplog):
    deliver_all(mailboxes, alice, [message(1), message(2), message(3)])
    sealed = bytearray(sealed_of(store_engine, 2))
    sealed[40] ^= 0x01
    set_sealed(store_engine, 2, bytes(sealed))

    with caplog.at_level(logging.WARNING, logger="gateway.store.session"):
        fetched = mailboxes.session(ALICE, alice).fetch("INBOX", [1, 2, 3])
    assert [stored.meta.uid for stored in fetched] == [1, 3]
    assert "cannot be opened" in caplog.text
    assert "test 2" not in caplog.text


def test_sealed_blobs_are_bound_to_their_row(store_engine, mailboxes, alice):
    deliver_all(mailboxes, alice, [message(1), message(2)])  # same size, same account
    first, second = sealed_of(store_engine, 1), sealed_of(store_engine, 2)
    set_sealed(store_engine, 1, second)
    set_sealed(store_engine, 2, first)
    assert mailboxes.session(ALICE, alice).fetch("INBOX", [1, 2]) == []


def test_internal_date_is_kept_as_an_instant(mailboxes, alice):
    when = datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)
    mailboxes.deliver(ALICE, alice, "INBOX", message(1), internal_date=when)
    (meta,) = mailboxes.session(ALICE, alice).snapshot("INBOX").messages
    assert meta.internal_date == when


def test_mail_stored_before_a_rotation_opens_with_the_rotated_keys(mailboxes, alice, store_engine):
    bodies = [message(1), message(2)]
    deliver_all(mailboxes, alice, bodies)
    rotated = alice.rotated()
    AccountStore(store_engine).set_keys(ALICE, b"sealed elsewhere", rotated.public)
    assert deliver_all(mailboxes, rotated, [message(3)]) == [3]
    session = mailboxes.session(ALICE, rotated)
    assert [m.body for m in session.fetch("INBOX", [1, 2, 3])] == [*bodies, message(3)]
    # The keys of before the rotation still read and write the same mailbox.
    assert [m.body for m in mailboxes.session(ALICE, alice).fetch("INBOX", [3])] == [message(3)]
