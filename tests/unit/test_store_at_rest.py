"""No plaintext at rest: a delivered message never reaches the database files in clear."""

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
    body = f"From: bob@example.org\r\n{subject}\r\n\r\nthe code is {canary}\r\n".encode()
    needles = [canary.encode(), canary.encode("utf-16-le"), subject.encode()]

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

    engine = open_engine(url)
    try:
        with caplog.at_level(logging.DEBUG):
            fetched = MailboxStore(engine).session(ALICE, keys).fetch("INBOX", [1])
        assert [stored.body for stored in fetched] == [body]
        assert canary not in caplog.text
    finally:
        engine.dispose()
    assert files_containing(db_dir, needles) == []
