"""APPEND, COPY, MOVE, CREATE, DELETE, RENAME and subscriptions, as the IMAP layer calls
them (`gateway.imap.backend.MailSession`), on every backend: the memory store, and the
SQL store on SQLite and on PostgreSQL (tests/imap_backends.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.imap.backend import (
    AppendResult,
    CannotDoThat,
    FlagMode,
    FolderExists,
    FolderHasChildren,
    MailboxNotFound,
    TryCreate,
)

ALICE = "alice@example.org"
WHEN = datetime(2023, 11, 2, 18, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
CHILD_ATTRIBUTES = ("\\HasChildren", "\\HasNoChildren")
MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def message(n: int) -> bytes:
    return f"From: a@example.org\r\nSubject: note {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def session(mail_backend):
    mail_backend.add_account(ALICE, "pw")
    session = mail_backend.other_session(ALICE)
    yield session
    session.close()


def listing(session) -> dict[str, tuple[str, ...]]:
    """Folder names with their attributes but the child ones (the IMAP layer decides those)."""
    return {
        info.name: tuple(a for a in info.attributes if a not in CHILD_ATTRIBUTES)
        for info in session.list_folders()
    }


def test_append_keeps_message_flags_keywords_and_internal_date(session):
    inbox_validity = session.snapshot("INBOX").uid_validity
    first = session.append("Sent", message(1), frozenset({"\\seen", "$Label1", "\\Recent"}), WHEN)
    second = session.append("inbox", message(2))
    sent = session.snapshot("Sent")
    assert first == AppendResult(uid_validity=sent.uid_validity, uid=1)
    assert second == AppendResult(uid_validity=inbox_validity, uid=1)
    (meta,) = sent.messages
    assert meta.flags == {"\\Seen", "$Label1"}
    assert meta.internal_date == WHEN
    assert meta.size == len(message(1))
    assert [m.body for m in session.fetch("Sent", [1])] == [message(1)]
    assert [h.header for h in session.fetch_headers("Sent", [1])] == [
        b"From: a@example.org\r\nSubject: note 1\r\n\r\n"
    ]
    # Without a date, INTERNALDATE is the time of the APPEND.
    (inbox_meta,) = session.snapshot("INBOX").messages
    assert abs(inbox_meta.internal_date - datetime.now(UTC)) < timedelta(minutes=1)


def test_append_to_a_missing_folder_asks_to_create_it(session):
    with pytest.raises(TryCreate) as refused:
        session.append("Nowhere", message(1))
    assert refused.value.code == "TRYCREATE"
    assert isinstance(refused.value, MailboxNotFound)


def test_copy_gives_new_uids_and_keeps_flags_and_dates(session):
    for n in range(1, 5):
        session.append("INBOX", message(n), frozenset({f"k{n}"}), WHEN + timedelta(days=n))
    session.store_flags("INBOX", [2], frozenset({"\\Flagged"}), FlagMode.ADD)
    session.append("Archive", message(99))

    result = session.copy("INBOX", [4, 2, 7, 2], "Archive")
    archive = session.snapshot("Archive")
    assert result.uid_validity == archive.uid_validity
    assert result.uids == ((2, 2), (4, 3))
    assert result.source_uids == (2, 4) and result.destination_uids == (2, 3)
    copied = {m.uid: m for m in archive.messages}
    assert copied[2].flags == {"k2", "\\Flagged"}
    assert copied[3].internal_date == WHEN + timedelta(days=4)
    assert [m.body for m in session.fetch("Archive", [2, 3])] == [message(2), message(4)]
    # One modseq for the whole copy, above the folder's earlier ones.
    assert copied[2].modseq == copied[3].modseq == archive.highest_modseq
    # The source is untouched.
    assert [m.uid for m in session.snapshot("INBOX").messages] == [1, 2, 3, 4]
    # Copies are messages of their own.
    session.store_flags("Archive", [2], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert session.expunge("Archive") == [2]
    assert session.fetch("INBOX", [2])[0].body == message(2)


def test_copy_into_the_same_folder_and_of_nothing(session):
    session.append("INBOX", message(1))
    assert session.copy("INBOX", [1], "INBOX").uids == ((1, 2),)
    assert [m.body for m in session.fetch("INBOX", [1, 2])] == [message(1), message(1)]
    empty = session.copy("INBOX", [40, 41], "Trash")
    assert empty.uids == () and empty.uid_validity == session.snapshot("Trash").uid_validity


def test_copy_and_move_name_the_missing_folder(session):
    session.append("INBOX", message(1))
    with pytest.raises(TryCreate):
        session.copy("INBOX", [1], "Nowhere")
    with pytest.raises(TryCreate):
        session.move("INBOX", [1], "Nowhere")
    with pytest.raises(MailboxNotFound) as missing:
        session.copy("Nowhere", [1], "INBOX")
    assert not isinstance(missing.value, TryCreate)
    with pytest.raises(CannotDoThat):
        session.move("INBOX", [1], "inbox")
    assert [m.uid for m in session.snapshot("INBOX").messages] == [1]


def test_move_expunges_from_the_source_in_the_same_step(session):
    for n in range(1, 4):
        session.append("INBOX", message(n), frozenset({"\\Seen"}), WHEN)
    before = session.snapshot("INBOX")

    result = session.move("INBOX", [1, 3], "Trash")
    assert result.uids == ((1, 1), (3, 2))
    assert result.uid_validity == session.snapshot("Trash").uid_validity
    inbox = session.snapshot("INBOX")
    assert [m.uid for m in inbox.messages] == [2]
    assert inbox.highest_modseq > before.highest_modseq
    assert inbox.uid_next == before.uid_next
    trash = session.snapshot("Trash")
    assert [(m.uid, m.flags, m.internal_date) for m in trash.messages] == [
        (1, {"\\Seen"}, WHEN), (2, {"\\Seen"}, WHEN)
    ]
    assert [m.body for m in session.fetch("Trash", [1, 2])] == [message(1), message(3)]
    assert [h.header for h in session.fetch_headers("Trash", [2])] == [
        b"From: a@example.org\r\nSubject: note 3\r\n\r\n"
    ]
    assert session.fetch("INBOX", [1, 3]) == []


def test_create_makes_no_superiors_which_stay_noselect_names(session):
    session.create_folder("Work/2024/Q1")
    session.create_folder("Work/")  # a trailing separator only declares intent
    folders = listing(session)
    assert folders["Work"] == ()
    assert "Work/2024" not in folders  # listed \Noselect by the IMAP layer
    assert folders["Work/2024/Q1"] == ()
    with pytest.raises(MailboxNotFound):
        session.snapshot("Work/2024")
    assert session.snapshot("Work").uid_next == 1
    session.create_folder("Work/2024")  # a \Noselect name can be created
    assert listing(session)["Work/2024"] == ()


@pytest.mark.parametrize("name", ["INBOX", "inbox", "Sent", "Work"])
def test_create_of_an_existing_name_is_refused(session, name):
    session.create_folder("Work")
    with pytest.raises(FolderExists) as refused:
        session.create_folder(name)
    assert refused.value.code == "ALREADYEXISTS"


@pytest.mark.parametrize("name", ["", "/", "a//b", "/a", "a\x01b", "a*", "50%", "x" * 513])
def test_names_the_store_cannot_hold_are_refused(session, name):
    with pytest.raises(CannotDoThat) as refused:
        session.create_folder(name)
    assert refused.value.code == "CANNOT"
    assert name not in listing(session) or name == ""


def test_delete_removes_the_folder_and_its_mail_but_not_its_inferiors(session):
    session.create_folder("Work")
    session.create_folder("Work/Old")
    session.append("Work", MESSAGE)
    session.subscribe("Work")
    session.delete_folder("Work")
    folders = listing(session)
    assert "Work" not in folders  # a \Noselect name now
    assert folders["Work/Old"] == ()
    with pytest.raises(MailboxNotFound):
        session.fetch("Work", [1])
    assert "Work" in session.list_subscribed()  # RFC 3501 6.3.6: never dropped unasked
    with pytest.raises(FolderHasChildren) as refused:
        session.delete_folder("Work")
    assert refused.value.code == "HASCHILDREN"
    session.delete_folder("Work/Old")
    with pytest.raises(MailboxNotFound):  # a \Noselect name goes with its last inferior
        session.delete_folder("Work")


def test_delete_of_inbox_or_a_missing_folder_is_refused(session):
    with pytest.raises(CannotDoThat):
        session.delete_folder("inbox")
    with pytest.raises(MailboxNotFound):
        session.delete_folder("Nowhere")


def test_rename_moves_inferiors_and_subscriptions_and_keeps_mail(session):
    session.create_folder("Work/Old/Deep")
    session.create_folder("Work")
    session.append("Work", MESSAGE, frozenset({"\\Flagged"}))
    session.append("Work/Old/Deep", MESSAGE)
    session.subscribe("Work")
    session.subscribe("Work/Old/Deep")
    before = session.snapshot("Work")

    session.rename_folder("Work", "Jobs/Past")
    folders = listing(session)
    assert not any(name.startswith("Work") for name in folders)
    assert [name for name in folders if name.startswith("Jobs")] == [
        "Jobs/Past/Old/Deep", "Jobs/Past"]
    assert folders["Jobs/Past"] == ()
    after = session.snapshot("Jobs/Past")
    assert after.uid_validity > before.uid_validity
    assert [(m.uid, m.flags) for m in after.messages] == [(1, {"\\Flagged"})]
    assert after.uid_next == before.uid_next
    assert session.fetch("Jobs/Past/Old/Deep", [1])[0].body == MESSAGE
    subscribed = session.list_subscribed()
    assert "Jobs/Past" in subscribed and "Jobs/Past/Old/Deep" in subscribed
    assert "Work" not in subscribed


def test_rename_keeps_the_special_use_attribute(session):
    session.rename_folder("Trash", "Deleted Items")
    assert listing(session)["Deleted Items"] == ("\\Trash",)
    assert "Trash" not in listing(session)


def test_rename_refusals(session):
    session.create_folder("A/B")
    with pytest.raises(FolderExists):
        session.rename_folder("Sent", "Drafts")
    with pytest.raises(FolderExists):
        session.rename_folder("Sent", "A")  # a \Noselect name exists
    with pytest.raises(FolderExists):
        session.rename_folder("Sent", "inbox")
    with pytest.raises(CannotDoThat):
        session.rename_folder("A", "A/B/C")
    with pytest.raises(MailboxNotFound):
        session.rename_folder("Nowhere", "Elsewhere")
    with pytest.raises(CannotDoThat):
        session.rename_folder("Sent", "bad//name")


def test_rename_of_inbox_moves_its_messages_and_leaves_it_empty(session):
    session.create_folder("INBOX/Sub")
    for n in range(3):
        session.append("INBOX", MESSAGE + bytes([65 + n]), frozenset({"\\Seen"}))
    before = session.snapshot("INBOX")

    session.rename_folder("INBOX", "Old Mail")
    inbox = session.snapshot("INBOX")
    assert inbox.messages == ()
    assert inbox.uid_validity == before.uid_validity
    assert inbox.uid_next == before.uid_next  # its UIDs are never given out again
    assert inbox.highest_modseq > before.highest_modseq
    moved = session.snapshot("Old Mail")
    assert [(m.uid, m.flags) for m in moved.messages] == [(1, {"\\Seen"}), (2, {"\\Seen"}),
                                                          (3, {"\\Seen"})]
    assert moved.uid_validity > before.uid_validity
    assert [m.body for m in session.fetch("Old Mail", [1, 2, 3])] == [
        MESSAGE + b"A", MESSAGE + b"B", MESSAGE + b"C"]
    assert "INBOX/Sub" in listing(session)  # inferiors of INBOX stay
    assert session.append("INBOX", MESSAGE).uid == before.uid_next
