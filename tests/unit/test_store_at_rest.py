"""No plaintext at rest: a delivered message never reaches the database files in clear,
neither as the whole message nor as the header block the store seals beside it."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE, add_account


def files_containing(directory, needles):
    found = []
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        found.extend((path.name, needle) for needle in needles if needle in data)
    return found


def test_canary_never_reaches_the_database_files(tmp_path, caplog):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    url = f"sqlite:///{db_dir}/gateway.db"
    canary = f"CANARY-{secrets.token_hex(16)}"
    subject = f"Subject: quarterly {canary}"
    # A second canary only in the header: it reaches the database in the header blob too.
    header_canary = f"HEADER-CANARY-{secrets.token_hex(16)}"
    header = f"From: bob@example.org\r\n{subject}\r\nX-Ticket: {header_canary}\r\n\r\n"
    body = f"{header}the code is {canary}\r\n".encode()
    needles = [
        canary.encode(),
        canary.encode("utf-16-le"),
        subject.encode(),
        header_canary.encode(),
        header.encode(),
    ]

    engine = open_engine(url)
    keys = add_account(AccountStore(engine), ALICE)
    mailboxes = MailboxStore(engine)
    with caplog.at_level(logging.DEBUG):
        uid = mailboxes.deliver(ALICE, keys, "INBOX", body, internal_date=datetime.now(UTC),
                                envelope_id=secrets.token_bytes(16))
    assert uid == 1
    # While open (the WAL holds the fresh pages) …
    assert {path.name for path in db_dir.iterdir()} >= {"gateway.db", "gateway.db-wal"}
    assert files_containing(db_dir, needles) == []
    engine.dispose()
    # … and after closing.
    assert files_containing(db_dir, needles) == []
    assert canary not in caplog.text
    assert header_canary not in caplog.text

    engine = open_engine(url)
    try:
        with caplog.at_level(logging.DEBUG):
            session = MailboxStore(engine).session(ALICE, keys)
            fetched = session.fetch("INBOX", [1])
            headers = session.fetch_headers("INBOX", [1])
        assert [stored.body for stored in fetched] == [body]
        assert [stored.header for stored in headers] == [header.encode()]
        assert canary not in caplog.text
        assert header_canary not in caplog.text
    finally:
        engine.dispose()
    assert files_containing(db_dir, needles) == []


def test_appended_copied_and_moved_mail_never_reaches_the_database_files(tmp_path, caplog):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    url = f"sqlite:///{db_dir}/gateway.db"
    canary = f"APPEND-CANARY-{secrets.token_hex(16)}"
    draft = f"From: alice@example.org\r\nSubject: {canary}\r\n\r\ndraft of {canary}\r\n".encode()
    needles = [canary.encode(), canary.encode("utf-16-le"), draft]

    engine = open_engine(url)
    keys = add_account(AccountStore(engine), ALICE)
    with caplog.at_level(logging.DEBUG):
        session = MailboxStore(engine).session(ALICE, keys)
        assert session.append("Drafts", draft, frozenset({"\\Draft"})).uid == 1
        session.copy("Drafts", [1], "Sent")
        session.move("Drafts", [1], "Trash")
        session.rename_folder("INBOX", "Older")
        assert [m.body for m in session.fetch("Trash", [1])] == [draft]
    assert files_containing(db_dir, needles) == []
    engine.dispose()
    assert files_containing(db_dir, needles) == []
    assert canary not in caplog.text
