"""APPEND, COPY, MOVE, UID EXPUNGE, CREATE/DELETE/RENAME and subscriptions over real sockets,
with imaplib (and raw sockets where imaplib would hide what the server sent), on each
backend in turn; a second session on the same mailbox sees what the first wrote.

`backend` is USER's account with LUNCH (UID 1, unseen) and NEWS (UID 2, seen) in INBOX
(`test_imap_server.seed_inbox`); the server has no TLS and allows plain LOGIN.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import aioimaplib
import pytest

from tests.bubble_processes import files_containing
from tests.imap_backends import MailBackend, SqlBackend
from tests.integration.test_imap_concurrency import logged_in, noop_untagged
from tests.integration.test_imap_server import (
    LUNCH,
    NEWS,
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration

DRAFT = b"From: alice@example.org\r\nSubject: Draft\r\n\r\nNot sent yet.\r\n"
APPEND_LIMIT = 4096


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


@pytest.fixture
def server(backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(
        backend, None, max_append=APPEND_LIMIT, max_literal=1024
    )
    yield running
    running.close()


def code(response: list[bytes | tuple[bytes, bytes]] | list[None]) -> bytes:
    """The response code of imaplib's last tagged answer, e.g. b"APPENDUID 7 3"."""
    text = response[-1]
    assert isinstance(text, bytes), response
    m = re.match(rb"\[([^\]]*)\]", text)
    assert m is not None, text
    return m[1]


def test_capability_advertises_uidplus_and_move(server: ServerThread):
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        assert {"UIDPLUS", "MOVE", "LITERAL+"} <= set(client.capabilities)
    finally:
        client.logout()


def test_append_with_flags_and_date_answers_appenduid(
    server: ServerThread, backend: MailBackend
):
    client = logged_in(server.port, "Drafts")
    watcher = logged_in(server.port, "Drafts")
    try:
        date = imaplib.Time2Internaldate((2024, 3, 4, 5, 6, 7, 0, 1, -1))
        typ, data = client.append("Drafts", "(\\Draft $Todo)", date, DRAFT)
        assert typ == "OK"
        validity = backend.snapshot(USER, "Drafts").uid_validity
        assert code(data) == b"APPENDUID %d 1" % validity
        assert backend.flags(USER, "Drafts", 1) == {"\\Draft", "$Todo"}
        # The session that appended learned of it at once; another one at its next command.
        assert client.response("EXISTS") == ("EXISTS", [b"0", b"1"])  # SELECT's, APPEND's
        # After FLAGS with $Todo; \Recent went to the session that appended.
        assert noop_untagged(watcher)[-2:] == [b"* 1 EXISTS", b"* 0 RECENT"]
        typ, fetched = watcher.uid("FETCH", "1", "(FLAGS BODY.PEEK[])")
        assert fetched[0][1] == DRAFT
        assert b"\\Draft" in fetched[0][0] and b"$Todo" in fetched[0][0]

        typ, data = client.append("Nope", None, None, DRAFT)
        assert typ == "NO" and code(data) == b"TRYCREATE"
        big = b"Subject: big\r\n\r\n" + b"x" * APPEND_LIMIT
        typ, data = client.append("Drafts", None, None, big)
        assert typ == "NO" and code(data) == b"TOOBIG"
        # The connection is still in step after the refused literal.
        assert client.noop()[0] == "OK"
    finally:
        client.logout()
        watcher.logout()


def test_append_bad_input_over_a_raw_socket(server: ServerThread):
    raw = Raw(server.port)
    try:
        raw.send(b"a APPEND INBOX {5}\r\n")
        assert raw.line() == b"+ Ready for literal data.\r\n"
        raw.send(b"hello\r\n")
        assert raw.until_tagged(b"a") == [b"a BAD Log in first.\r\n"]
        # Before login a message may be no larger than any literal (max_literal, 1024).
        raw.send(b"a APPEND INBOX {2000}\r\n")
        assert raw.until_tagged(b"a") == [b"a NO [TOOBIG] Messages are limited to 1024 octets\r\n"]
        raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        raw.until_tagged(b"l")
        raw.send(b"a APPEND INBOX {2000}\r\n")
        assert raw.line() == b"+ Ready for literal data.\r\n"
        raw.send(b"x" * 2000 + b"\r\n")
        assert raw.until_tagged(b"a")[-1].startswith(b"a OK [APPENDUID ")
        raw.send(b"b APPEND INBOX {5000}\r\n")  # refused before the client sends a byte
        assert raw.until_tagged(b"b") == [b"b NO [TOOBIG] Messages are limited to 4096 octets\r\n"]
        raw.send(b'c APPEND INBOX "not a date" {3+}\r\nabc\r\n')
        assert raw.until_tagged(b"c")[-1].startswith(b"c BAD Expected a date-time")
        raw.send(b"d APPEND INBOX (\\Bogus) {3+}\r\nabc\r\n")
        assert raw.until_tagged(b"d")[-1].startswith(b"d BAD Unknown or read-only system flag")
        raw.send(b"e APPEND INBOX {3}\r\n")
        assert raw.line() == b"+ Ready for literal data.\r\n"
        raw.send(b"abc\r\n")
        assert raw.until_tagged(b"e")[-1].startswith(b"e OK [APPENDUID ")
        raw.send(b"f NOOP\r\n")
        assert raw.until_tagged(b"f")[-1] == b"f OK NOOP completed.\r\n"
    finally:
        raw.close()


def test_copy_and_move_answer_copyuid_and_others_see_expunges(
    server: ServerThread, backend: MailBackend
):
    client = logged_in(server.port)
    other = logged_in(server.port)
    try:
        trash = backend.snapshot(USER, "Trash").uid_validity
        typ, data = client.copy("1:2", "Trash")
        assert typ == "OK" and code(data) == b"COPYUID %d 1:2 1:2" % trash
        typ, data = client.copy("1", "Nope")
        assert typ == "NO" and code(data) == b"TRYCREATE"
        with pytest.raises(imaplib.IMAP4.error, match="No such message sequence number"):
            client.copy("7", "Trash")

        tag = client._new_tag()  # noqa: SLF001 -- imaplib has no MOVE, and would hide the OK
        client.send(tag + b" UID MOVE 1 Trash\r\n")
        lines = []
        while not (line := client.readline()).startswith(tag):
            lines.append(line.rstrip(b"\r\n"))
        assert line.startswith(tag + b" OK")
        assert lines == [b"* OK [COPYUID %d 1 3] Moved." % trash, b"* 1 EXPUNGE"]
        assert backend.uids(USER, "INBOX") == [2]
        assert backend.uids(USER, "Trash") == [1, 2, 3]
        assert backend.flags(USER, "Trash", 2) == {"\\Seen"}  # NEWS kept its flags

        assert noop_untagged(other) == [b"* 1 EXPUNGE"]
        typ, data = other.uid("FETCH", "1:*", "(UID)")
        assert data == [b"1 (UID 2)"]
        assert client.uid("MOVE", "2", "INBOX")[0] == "NO"  # into itself: [CANNOT]
        assert other.select("Trash", readonly=True)[0] == "OK"
        assert other.uid("MOVE", "1", "INBOX")[0] == "NO"  # read-only: [READ-ONLY]
    finally:
        client.logout()
        other.logout()


def test_uid_expunge_leaves_other_deleted_messages(server: ServerThread, backend: MailBackend):
    client = logged_in(server.port)
    try:
        client.store("1:2", "+FLAGS", "(\\Deleted)")
        typ, data = client.uid("EXPUNGE", "2")
        assert typ == "OK" and client.response("EXPUNGE") == ("EXPUNGE", [b"2"])
        assert backend.uids(USER, "INBOX") == [1]
        with pytest.raises(imaplib.IMAP4.error, match="Expected a sequence set"):
            client.uid("EXPUNGE", "x")
    finally:
        client.logout()


def test_folders_and_subscriptions(server: ServerThread, backend: MailBackend):
    client = logged_in(server.port)
    try:
        assert client.create("Projects/2024")[0] == "OK"
        typ, data = client.create("Projects/2024")
        assert typ == "NO" and code(data) == b"ALREADYEXISTS"
        typ, listed = client.list('""', "Projects*")
        assert listed == [
            b'(\\Noselect \\HasChildren) "/" "Projects"',
            b'(\\HasNoChildren) "/" "Projects/2024"',
        ]
        typ, data = client.delete("Projects")
        assert typ == "NO" and code(data) == b"HASCHILDREN"
        typ, data = client.delete("INBOX")
        assert typ == "NO" and code(data) == b"CANNOT"
        assert client.subscribe("Projects/2024")[0] == "OK"
        typ, subscribed = client.lsub('""', "Projects/%")
        assert subscribed == [b'(\\HasNoChildren) "/" "Projects/2024"']

        # RENAME of the selected folder leaves it: the session is AUTHENTICATED again.
        assert client.select("Projects/2024")[0] == "OK"
        client.append("Projects/2024", None, None, DRAFT)
        assert client.rename("Projects/2024", "Done")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error, match="No mailbox selected"):
            client.fetch("1", "(FLAGS)")
        assert client.lsub('""', "Done")[1] == [b'(\\HasNoChildren) "/" "Done"']  # followed
        assert client.select("Done")[1] == [b"1"]
        assert client.delete("Done")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error, match="No mailbox selected"):
            client.fetch("1", "(FLAGS)")
        typ, data = client.select("Done")
        assert typ == "NO" and b"NONEXISTENT" in data[0]
        assert client.unsubscribe("Done")[0] == "OK"
        typ, data = client.unsubscribe("Done")
        assert typ == "NO" and code(data) == b"CANNOT"

        # RENAME INBOX moves its mail into the new folder and leaves INBOX empty.
        assert client.rename("INBOX", "Old")[0] == "OK"
        assert backend.uids(USER, "INBOX") == []
        assert len(backend.uids(USER, "Old")) == 2
        assert client.select("Old")[0] == "OK"
        typ, data = client.fetch("1:*", "(BODY.PEEK[])")
        assert sorted(part[1] for part in data if isinstance(part, tuple)) == sorted(
            [LUNCH, NEWS]
        )
    finally:
        client.logout()


def test_create_in_wrong_state_and_bad_names(server: ServerThread):
    raw = Raw(server.port)
    try:
        raw.send(b"a CREATE Box\r\n")
        assert raw.until_tagged(b"a") == [b"a BAD Log in first.\r\n"]
        raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        raw.until_tagged(b"l")
        raw.send(b"b CREATE &Jjo\r\n")  # not modified UTF-7
        assert raw.until_tagged(b"b")[-1].startswith(b"b BAD Invalid mailbox name")
        raw.send(b"c RENAME Box\r\n")
        assert raw.until_tagged(b"c")[-1].startswith(b"c BAD Incomplete RENAME command")
        raw.send(b"d MOVE 1 Trash\r\n")
        assert raw.until_tagged(b"d") == [b"d BAD No mailbox selected.\r\n"]
    finally:
        raw.close()


def test_idle_sees_what_another_session_appends_and_moves(server: ServerThread):
    async def session() -> None:
        idler = aioimaplib.IMAP4("127.0.0.1", server.port, timeout=10)
        await idler.wait_hello_from_server()
        await idler.login(USER, PASSWORD)
        await idler.select("INBOX")
        writer = await asyncio.to_thread(logged_in, server.port)
        try:
            idle = await idler.idle_start(timeout=60)
            await asyncio.to_thread(writer.append, "INBOX", None, None, DRAFT)
            # then RECENT: whichever of the two sessions looked first holds it as \Recent
            assert (await idler.wait_server_push(timeout=10))[:1] == [b"3 EXISTS"]
            await asyncio.to_thread(writer.uid, "MOVE", "1", "Trash")
            assert await idler.wait_server_push(timeout=10) == [b"1 EXPUNGE"]
            idler.idle_done()
            assert (await asyncio.wait_for(idle, 10)).result == "OK"
            await idler.logout()
        finally:
            await asyncio.to_thread(writer.logout)

    asyncio.run(session())


def test_appended_mail_reaches_no_file_and_no_log_in_clear(
    server: ServerThread, backend: MailBackend, caplog: pytest.LogCaptureFixture
):
    if not isinstance(backend, SqlBackend) or backend.kind != "sqlite":
        pytest.skip("the database files to scan are SQLite's")
    canary = f"IMAP-APPEND-CANARY-{secrets.token_hex(16)}"
    message = f"From: alice@example.org\r\nSubject: {canary}\r\n\r\n{canary}\r\n".encode()
    with caplog.at_level(logging.DEBUG):
        client = logged_in(server.port)
        try:
            assert client.append("Drafts", "(\\Draft)", None, message)[0] == "OK"
            assert client.select("Drafts")[0] == "OK"
            assert client.copy("1", "Sent")[0] == "OK"
            assert client.uid("MOVE", "1", "Trash")[0] == "OK"
            assert client.rename("Sent", "Sent-2024")[0] == "OK"
        finally:
            client.logout()
    assert backend.uids(USER, "Trash") == [1]
    database = Path(backend.database_path).parent
    needles = [canary.encode(), canary.encode("utf-16-le"), message]
    assert files_containing([database], needles) == []
    assert canary not in caplog.text
