"""The sealed header block beside each stored message (gateway/store/mailbox.py).

`MailboxStore.deliver` seals a message's header block on its own; `fetch_headers` opens only
that. These tests check it opens to exactly `header_block(message)`, that it is bound to its
row and marked as the header part (a header blob does not open as a message, nor a message
blob as a header, nor one row's header in another row), and that the message blob is not
read to answer it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from gateway.imap.backend import MailboxNotFound, StorageFailed, header_block
from gateway.store.db import SessionClosed
from gateway.store.models import Message
from tests.unit.store_support import ALICE

pytest_plugins = ["tests.unit.store_fixtures"]

WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
HEAD = b"From: a@example.org\r\nSubject: header blob\r\n\r\n"
SHAPES = [
    HEAD + b"body text\r\n",  # the usual message
    HEAD,  # a header and nothing after the blank line
    b"\r\nno header at all\r\n",  # starts with the empty line: the header block is CRLF
    b"From: a@example.org\r\nSubject: no blank line\r\n",  # all header
    b"From: a@example.org\nSubject: bare LF\n\nbody\n",  # bare LF ends no header block
]


def deliver_all(mailboxes, keys, bodies):
    return [mailboxes.deliver(ALICE, keys, "INBOX", b, internal_date=WHEN) for b in bodies]


def column_of(store_engine, column, uid: int) -> bytes:
    with Session(store_engine) as session:
        return session.exec(select(column).where(col(Message.uid) == uid)).one()


def set_column(store_engine, uid: int, **values: bytes) -> None:
    with Session(store_engine) as session:
        session.execute(update(Message).where(col(Message.uid) == uid).values(**values))
        session.commit()


def test_header_block_cuts_after_the_first_empty_line():
    assert header_block(HEAD + b"body\r\n\r\nmore\r\n") == HEAD
    assert header_block(HEAD) == HEAD
    assert header_block(b"\r\nbody\r\n") == b"\r\n"
    assert header_block(b"Subject: x\r\n") == b"Subject: x\r\n"
    assert header_block(b"") == b""


def test_fetch_headers_opens_the_header_block_of_every_shape(mailboxes, alice):
    assert deliver_all(mailboxes, alice, SHAPES) == [1, 2, 3, 4, 5]
    session = mailboxes.session(ALICE, alice)
    headers = session.fetch_headers("INBOX", [5, 4, 3, 2, 1, 99, 1])
    assert [h.uid for h in headers] == [1, 2, 3, 4, 5]
    assert [h.header for h in headers] == [header_block(body) for body in SHAPES]
    assert session.fetch_headers("INBOX", []) == []


def test_fetch_headers_after_close_and_for_missing_folders(mailboxes, alice):
    deliver_all(mailboxes, alice, SHAPES[:1])
    session = mailboxes.session(ALICE, alice)
    with pytest.raises(MailboxNotFound):
        session.fetch_headers("Nowhere", [1])
    session.close()
    with pytest.raises(StorageFailed) as refused:
        session.fetch_headers("INBOX", [1])
    assert isinstance(refused.value.__cause__, SessionClosed)


def test_every_message_gets_both_blobs_sealed(store_engine, mailboxes, alice):
    deliver_all(mailboxes, alice, SHAPES[:1])
    header = column_of(store_engine, Message.sealed_header, 1)
    sealed = column_of(store_engine, Message.sealed, 1)
    assert HEAD not in header and b"header blob" not in header and b"header blob" not in sealed
    # nonce (24) || ciphertext || tag (16): the header blob has its own nonce
    assert len(header) == 24 + len(HEAD) + 16
    assert header[:24] != sealed[:24]


def test_fetch_headers_reads_no_message_blob(store_engine, mailboxes, alice):
    deliver_all(mailboxes, alice, SHAPES[:2])
    set_column(store_engine, 1, sealed=b"\0" * 64)  # the message blob is ruined …
    session = mailboxes.session(ALICE, alice)
    assert [h.header for h in session.fetch_headers("INBOX", [1, 2])] == [HEAD, HEAD]
    assert [m.meta.uid for m in session.fetch("INBOX", [1, 2])] == [2]  # … as fetch shows


def test_a_tampered_header_blob_is_skipped_and_logged(store_engine, mailboxes, alice, caplog):
    deliver_all(mailboxes, alice, SHAPES[:3])
    header = bytearray(column_of(store_engine, Message.sealed_header, 2))
    header[30] ^= 0x01
    set_column(store_engine, 2, sealed_header=bytes(header))
    with caplog.at_level(logging.WARNING, logger="gateway.store.session"):
        headers = mailboxes.session(ALICE, alice).fetch_headers("INBOX", [1, 2, 3])
    assert [h.uid for h in headers] == [1, 3]
    assert "cannot be opened" in caplog.text
    assert "header blob" not in caplog.text


def test_header_blobs_are_bound_to_their_row(store_engine, mailboxes, alice):
    same = HEAD + b"same size\r\n"
    deliver_all(mailboxes, alice, [same, same])  # same size, same header length, same account
    first = column_of(store_engine, Message.sealed_header, 1)
    second = column_of(store_engine, Message.sealed_header, 2)
    set_column(store_engine, 1, sealed_header=second)
    set_column(store_engine, 2, sealed_header=first)
    assert mailboxes.session(ALICE, alice).fetch_headers("INBOX", [1, 2]) == []


def test_header_and_message_blobs_do_not_open_in_each_others_place(store_engine, mailboxes, alice):
    # All header: the header block is the whole message, so both blobs hold the same
    # plaintext under the same key and binding numbers; only the part they are sealed as
    # tells them apart.
    deliver_all(mailboxes, alice, [SHAPES[3]])
    header = column_of(store_engine, Message.sealed_header, 1)
    sealed = column_of(store_engine, Message.sealed, 1)
    assert len(header) == len(sealed)
    set_column(store_engine, 1, sealed=header, sealed_header=sealed)
    session = mailboxes.session(ALICE, alice)
    assert session.fetch("INBOX", [1]) == []
    assert session.fetch_headers("INBOX", [1]) == []
