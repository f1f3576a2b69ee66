"""The sealed header cache (gateway/store/header_cache.py): header blocks of runs of a
folder's messages sealed together, read by `fetch_headers` instead of one blob per message.

What a user would check: `fetch_headers` answers exactly what each message's own header
gives, whatever was expunged, moved, copied or renamed since the blocks were made; a block
that does not open (tampered with, or moved to another folder or range) costs only speed;
nothing of the headers reaches the database in clear. Runs of 4 messages keep the tests
small (`BLOCK_MESSAGES`).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from bridge.headers import parse_header
from gateway.imap.backend import FlagMode, ParsedHeader, header_block
from gateway.smtp.sent import SentCopies
from gateway.store import header_cache
from gateway.store.accounts import AccountStore
from gateway.store.db import reading, writing
from gateway.store.mailbox import MailboxStore
from gateway.store.models import Folder, HeaderCacheBlock
from gateway.store.outbox import Outbox, Part
from tests.unit.store_support import ALICE, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
RUN = 4


@pytest.fixture(autouse=True)
def short_runs(monkeypatch):
    monkeypatch.setattr(header_cache, "BLOCK_MESSAGES", RUN)


def message(n: int) -> bytes:
    return (f"From: sender{n}@example.org\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


def blocks(engine, folder: str | None = None) -> list[tuple[int, int]]:
    query = select(col(HeaderCacheBlock.first_uid), col(HeaderCacheBlock.last_uid))
    if folder is not None:
        query = query.join(Folder, col(Folder.id) == col(HeaderCacheBlock.folder_id)).where(
            col(Folder.name) == folder)
    with reading(engine) as connection:
        return sorted(tuple(row) for row in connection.execute(query))


def headers(session, folder: str, uids) -> dict[int, bytes]:
    return {h.uid: h.header for h in session.fetch_headers(folder, list(uids))}


def test_full_runs_are_cached_and_read_back_exactly(store_engine, mailboxes, alice):
    for n in range(1, 11):
        mailboxes.deliver(ALICE, alice, "INBOX", message(n), internal_date=WHEN)
    assert blocks(store_engine) == [(1, 4), (5, 8)]  # 9 and 10 wait for a full run
    session = mailboxes.session(ALICE, alice)
    assert headers(session, "INBOX", range(1, 11)) == {
        n: header_block(message(n)) for n in range(1, 11)}
    # Any subset, in UID order, missing UIDs skipped, as the contract says.
    got = session.fetch_headers("INBOX", [10, 3, 3, 99, 6])
    assert [(h.uid, h.header) for h in got] == [
        (n, header_block(message(n))) for n in (3, 6, 10)]
    assert session.fetch_headers("INBOX", []) == []
    # Sparse UIDs are read by list, not by range.
    assert [h.uid for h in session.fetch_headers("INBOX", [1, 10, 10_000])] == [1, 10]


def test_expunged_moved_copied_and_renamed_messages_read_right(store_engine, mailboxes, alice):
    session = mailboxes.session(ALICE, alice)
    for n in range(1, 9):
        session.append("INBOX", message(n))
    assert blocks(store_engine, "INBOX") == [(1, 4), (5, 8)]
    session.store_flags("INBOX", [2], frozenset({"\\Deleted"}), FlagMode.ADD)
    session.expunge("INBOX")
    session.move("INBOX", [3, 5], "Archive")
    session.copy("INBOX", [1, 4, 6, 7], "Archive")  # Archive now holds a full run
    assert blocks(store_engine, "Archive") == [(1, 4)]
    assert headers(session, "INBOX", range(1, 9)) == {
        n: header_block(message(n)) for n in (1, 4, 6, 7, 8)}
    archived = (3, 5, 1, 4, 6, 7)  # the messages behind Archive's UIDs 1 to 6
    assert headers(session, "Archive", range(1, 7)) == {
        uid: header_block(message(n)) for uid, n in enumerate(archived, start=1)}
    session.rename_folder("INBOX", "Before")
    assert blocks(store_engine, "Before") == [(1, 4), (5, 8)]  # went along with the mail
    assert headers(session, "Before", range(1, 9)) == {
        n: header_block(message(n)) for n in (1, 4, 6, 7, 8)}
    assert headers(session, "INBOX", range(1, 9)) == {}


def test_a_block_that_does_not_open_costs_only_speed(store_engine, mailboxes, alice, caplog):
    session = mailboxes.session(ALICE, alice)
    for n in range(1, 9):
        session.append("INBOX", message(n))
    with writing(store_engine) as connection:
        first = select(col(HeaderCacheBlock.id)).where(col(HeaderCacheBlock.first_uid) == 1)
        second = select(col(HeaderCacheBlock.sealed)).where(col(HeaderCacheBlock.first_uid) == 5)
        # The second block's blob in the first's row: bound to another range, it does
        # not open there.
        connection.execute(update(HeaderCacheBlock).where(
            col(HeaderCacheBlock.id) == first.scalar_subquery()).values(
            sealed=second.scalar_subquery()))
    with caplog.at_level(logging.WARNING, logger="gateway.store.header_cache"):
        got = headers(session, "INBOX", range(1, 9))
    assert got == {n: header_block(message(n)) for n in range(1, 9)}
    assert "header cache block" in caplog.text and "cannot be opened" in caplog.text
    assert "sender1" not in caplog.text


def test_a_folder_filled_without_the_cache_is_cached_at_its_next_message(
    store_engine, mailboxes, alice, monkeypatch
):
    monkeypatch.setattr(header_cache, "extend", lambda *args: 0)  # as a migration files mail
    for n in range(1, 10):
        mailboxes.deliver(ALICE, alice, "INBOX", message(n), internal_date=WHEN)
    assert blocks(store_engine) == []
    monkeypatch.undo()
    monkeypatch.setattr(header_cache, "BLOCK_MESSAGES", RUN)
    monkeypatch.setattr(header_cache, "BLOCKS_PER_ADDITION", 1)
    mailboxes.deliver(ALICE, alice, "INBOX", message(10), internal_date=WHEN)
    assert blocks(store_engine) == [(1, 4)]  # one block an addition: the backlog waits
    mailboxes.deliver(ALICE, alice, "INBOX", message(11), internal_date=WHEN)
    assert blocks(store_engine) == [(1, 4), (5, 8)]
    session = mailboxes.session(ALICE, alice)
    assert headers(session, "INBOX", range(1, 12)) == {
        n: header_block(message(n)) for n in range(1, 12)}


def test_sent_copies_fill_the_cache_too(store_engine, mailboxes, alice):
    copies = SentCopies(AccountStore(store_engine))
    parts = [Part(hold=secrets.token_bytes(16), items=(),
                  copies=[copies.prepare(ALICE, alice, message(n))]) for n in range(1, 6)]
    Outbox(store_engine).write(parts)
    assert blocks(store_engine, "Sent") == [(1, 4)]


def test_cached_headers_never_reach_the_database_files_in_clear(tmp_path):
    from gateway.store.db import open_engine

    db_dir = tmp_path / "db"
    db_dir.mkdir()
    engine = open_engine(f"sqlite:///{db_dir}/gateway.db")
    keys = add_account(AccountStore(engine), ALICE)
    canary = f"CACHE-CANARY-{secrets.token_hex(16)}"
    mailboxes = MailboxStore(engine)
    for n in range(RUN):
        body = f"From: a@example.org\r\nSubject: {canary} {n}\r\n\r\nx\r\n".encode()
        mailboxes.deliver(ALICE, keys, "INBOX", body, internal_date=WHEN)
    with reading(engine) as connection:
        assert connection.execute(select(func.count()).select_from(HeaderCacheBlock)).scalar() == 1
    engine.dispose()
    for path in db_dir.iterdir():
        assert canary.encode() not in path.read_bytes(), path.name


SHAPES = [
    b"From: a@example.org\r\nSubject: folded\r\n  over two lines\r\n\r\nbody\r\n",
    b"From a@example.org Mon Jan  1 00:00:00 2024\r\nSubject: after an mbox line\r\n\r\nx\r\n",
    b"Subject : spaced name\r\nX-Empty:\r\nTo: b@example.org\r\n\r\n",
    b"From: a@example.org\nSubject: bare LF\n\nbody\n",
    b"\r\nno header at all\r\n",
    b"From: a@example.org\r\nSubject: no blank line\r\n",
    b"X-" + b"n" * 300 + b": a field name too long to record\r\nSubject: s\r\n\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?= \xc3\xa9t\xc3\xa9\r\n\r\nbody\r\n",
]


def test_cached_headers_come_with_their_fields_split_as_the_parser_splits_them(
    mailboxes, alice
):
    for shape in SHAPES:
        mailboxes.deliver(ALICE, alice, "INBOX", shape, internal_date=WHEN)
    got = mailboxes.session(ALICE, alice).fetch_headers("INBOX", range(1, len(SHAPES) + 1))
    assert [h.header for h in got] == [header_block(shape) for shape in SHAPES]
    parsed = [h for h in got if isinstance(h, ParsedHeader)]
    assert [h.uid for h in parsed] == [1, 2, 3, 4, 5, 6, 8]  # all cached, the long name unsplit
    for h in parsed:
        assert h.fields == parse_header(h.header, limit=None).fields
