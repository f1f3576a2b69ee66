"""Several IMAP sessions at once over real sockets: none stalls another, each sees the
others' changes, and IDLE pushes them (also what a real gateway's fetcher delivers).
`backend` is each backend in turn with USER's INBOX as test_imap_server seeds it
(`seed_inbox`).

The server runs on its own loop (`ServerThread`); clients are imaplib, aioimaplib and
raw sockets in the test. Storage waits are real: a SQLite write lock held by a second
connection to the database file, as another process would hold it.
"""

from __future__ import annotations

import asyncio
import imaplib
import select
import smtplib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import pytest

from gateway.imap.backend import Authenticator, FlagMode, MailSession, MessageMeta
from gateway.imap.config import ImapConfig
from tests.bubble_processes import Bubble
from tests.imap_backends import MailBackend, ObservedSession, SqlBackend, make_backend
from tests.integration.test_imap_server import (
    LUNCH,
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration

NOTE = b"From: carol@example.org\r\nSubject: Note\r\n\r\nA new one.\r\n"


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


@pytest.fixture
def plain_server(backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(backend, None)
    yield running
    running.close()


def logged_in(port: int, folder: str = "INBOX") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(USER, PASSWORD)
    client.select(folder)
    return client


def noop_untagged(client: imaplib.IMAP4) -> list[bytes]:
    """The untagged responses a NOOP brought, as raw lines (imaplib sorts them by name)."""
    tag = client._new_tag()  # noqa: SLF001 -- imaplib has no public way to see every line
    client.send(tag + b" NOOP\r\n")
    lines = []
    while True:
        line = client.readline()
        assert line, "connection closed"
        if line.startswith(tag + b" "):
            assert line.startswith(tag + b" OK"), line
            return lines
        lines.append(line.rstrip(b"\r\n"))


# -- sessions on one mailbox see each other's changes (RFC 3501 section 5.2, 7.4.1)


def test_concurrent_sessions_see_flags_new_mail_and_expunges(
    plain_server: ServerThread, backend: MailBackend
):
    a = logged_in(plain_server.port)
    b = logged_in(plain_server.port)
    try:
        assert noop_untagged(b) == []

        assert a.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert noop_untagged(b) == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged))"]
        assert noop_untagged(b) == []  # told once

        uid = backend.deliver(USER, "INBOX", NOTE)
        assert noop_untagged(b) == [b"* 3 EXISTS", b"* 1 RECENT"]  # b saw it first
        assert b.fetch("3", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1] == (
            b"Subject: Note\r\n\r\n"
        )
        assert noop_untagged(a) == [b"* 3 EXISTS", b"* 2 RECENT"]  # a's from its SELECT

        a.store("1", "+FLAGS", "(\\Deleted)")
        assert a.expunge() == ("OK", [b"1"])
        assert noop_untagged(b) == [b"* 1 EXPUNGE"]
        typ, data = b.fetch("1:*", "(UID)")
        assert data == [b"1 (UID 2)", b"2 (UID %d)" % uid]
    finally:
        a.logout()
        b.logout()


def test_expunge_waits_while_the_client_fetches_by_number(
    plain_server: ServerThread, backend: MailBackend
):
    """A FETCH by message number must not shift the numbers under the client: the other
    session's expunge is told at the next NOOP, not during FETCH (RFC 3501 7.4.1)."""
    a = logged_in(plain_server.port)
    b = logged_in(plain_server.port)
    try:
        a.store("1", "+FLAGS", "(\\Deleted)")
        a.expunge()
        typ, data = b.fetch("2", "(UID)")
        assert data[-1] == b"2 (UID 2)"
        assert noop_untagged(b) == [b"* 1 EXPUNGE"]
        assert b.fetch("1", "(UID)")[1] == [b"1 (UID 2)"]
    finally:
        a.logout()
        b.logout()


# -- no storage call blocks the event loop


class _Announcing(ObservedSession):
    """Passes every call through; `store_flags` first says that it started."""

    def __init__(self, inner: MailSession, started: threading.Event) -> None:
        super().__init__(inner, [])
        self._started = started

    def store_flags(
        self,
        folder: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Sequence[MessageMeta]:
        self._started.set()
        return super().store_flags(folder, uids, flags, mode, unchanged_since)


class _AnnouncingAuthenticator:
    def __init__(self, inner: Authenticator, started: threading.Event) -> None:
        self.inner = inner
        self.started = started

    def login(self, username: str, password: str) -> _Announcing:
        return _Announcing(self.inner.login(username, password), self.started)


def test_a_store_waiting_on_a_write_lock_stalls_no_other_session(tmp_path: Path):
    """One connection's STORE waits on a SQLite write lock another process holds; a second
    session's NOOP and FETCH are answered meanwhile, and the STORE completes once the lock
    is gone. Served on the loop, the second session would wait for the first."""
    with make_backend("sqlite", tmp_path) as backend:
        assert isinstance(backend, SqlBackend)
        backend.add_account(USER, PASSWORD)
        backend.deliver(USER, "INBOX", LUNCH)
        started = threading.Event()
        authenticator = _AnnouncingAuthenticator(backend.authenticator, started)
        running = ServerThread(ImapConfig(), authenticator, None)
        blocked = Raw(running.port)
        other = logged_in(running.port)
        holder = sqlite3.connect(backend.database_path, isolation_level=None)
        try:
            blocked.send(f"a LOGIN {USER} \"{PASSWORD}\"\r\nb SELECT INBOX\r\n".encode())
            blocked.until_tagged(b"b")
            holder.execute("BEGIN IMMEDIATE")  # the write lock, as another writer holds it
            blocked.send(b"c STORE 1 +FLAGS (\\Flagged)\r\n")
            assert started.wait(10)

            assert noop_untagged(other) == []
            typ, data = other.fetch("1", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and data[0][1] == b"Subject: Lunch\r\n\r\n"
            assert select.select([blocked.sock], [], [], 0)[0] == []  # still waiting

            holder.execute("ROLLBACK")
            assert blocked.until_tagged(b"c")[-1].startswith(b"c OK")
            assert noop_untagged(other) == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))"]
        finally:
            holder.close()
            blocked.close()
            other.logout()
            running.close()


# -- IDLE (RFC 2177)


def test_idle_pushes_new_mail_flags_and_expunges(
    plain_server: ServerThread, backend: MailBackend
):
    async def session() -> None:
        client = aioimaplib.IMAP4("127.0.0.1", plain_server.port, timeout=10)
        await client.wait_hello_from_server()
        assert "IDLE" in client.protocol.capabilities
        await client.login(USER, PASSWORD)
        await client.select("INBOX")
        other = backend.other_session(USER)
        try:
            idle = await client.idle_start(timeout=60)
            uid = await asyncio.to_thread(backend.deliver, USER, "INBOX", NOTE)
            assert await client.wait_server_push(timeout=10) == [b"3 EXISTS", b"3 RECENT"]

            await asyncio.to_thread(
                other.store_flags, "INBOX", [1], frozenset({"\\Deleted"}), FlagMode.ADD
            )
            assert await client.wait_server_push(timeout=10) == [
                b"1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))"
            ]
            assert await asyncio.to_thread(other.expunge, "INBOX") == [1]
            assert await client.wait_server_push(timeout=10) == [b"1 EXPUNGE"]

            client.idle_done()
            result = await asyncio.wait_for(idle, 10)
            assert result.result == "OK"
            fetched = await client.fetch("1:*", "(UID)")
            assert fetched.lines[:2] == [b"1 FETCH (UID 2)", f"2 FETCH (UID {uid})".encode()]
            await client.logout()
        finally:
            other.close()

    asyncio.run(session())


def test_idle_ends_only_with_done(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    try:
        raw.send(f"a LOGIN {USER} \"{PASSWORD}\"\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        raw.until_tagged(b"b")
        assert raw.line() == b"+ idling\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.line() == b"c BAD Expected DONE to end IDLE.\r\n"
        raw.send(b"d IDLE\r\n")
        assert raw.line() == b"+ idling\r\n"
        raw.send(b"done\r\n")
        assert raw.line() == b"d OK IDLE terminated.\r\n"
        raw.send(b"e NOOP\r\n")
        assert raw.until_tagged(b"e") == [b"e OK NOOP completed.\r\n"]
    finally:
        raw.close()


def test_idle_without_a_mailbox_waits_for_done(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    try:
        raw.send(f"a LOGIN {USER} \"{PASSWORD}\"\r\nb IDLE\r\n".encode())
        raw.until_tagged(b"a")
        assert raw.line() == b"+ idling\r\n"
        raw.send(b"DONE\r\n")
        assert raw.line() == b"b OK IDLE terminated.\r\n"
    finally:
        raw.close()


def test_idle_pushes_mail_the_fetcher_delivers(bubble: Bubble):
    """alice submits over SMTP; bob, idling in his INBOX on his own gateway, is told
    `* 1 EXISTS` when his gateway's fetcher stores the envelope, with no command sent."""
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    imap = imaplib.IMAP4("127.0.0.1", bob.imap_port, timeout=60)
    try:
        imap.starttls(ssl_context=bob.tls_context())
        imap.login(bob.address, bob.password)
        assert imap.select("INBOX") == ("OK", [b"0"])
        imap.send(b"i IDLE\r\n")
        assert imap.readline() == b"+ idling\r\n"

        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = alice.address, bob.address, "Ping"
        message.set_content("Are you there?\n")
        with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=alice.tls_context())
            smtp.login(alice.address, alice.password)
            assert smtp.send_message(message) == {}

        assert imap.readline() == b"* 1 EXISTS\r\n"
        assert imap.readline() == b"* 1 RECENT\r\n"
        imap.send(b"DONE\r\n")
        assert imap.readline() == b"i OK IDLE terminated.\r\n"
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: Ping\r\n\r\n"
    finally:
        imap.logout()


def test_idle_sees_a_commit_of_another_process_at_its_next_look(tmp_path: Path):
    """A commit the notifier never hears of (another process wrote the database) is
    pushed at IDLE's next look, `idle_poll` seconds later at the latest."""
    with make_backend("sqlite", tmp_path) as backend:
        assert isinstance(backend, SqlBackend)
        seed_inbox(backend)
        config = ImapConfig(idle_poll=0.2)
        running = ServerThread(config, backend.authenticator, None)
        raw = Raw(running.port)
        try:
            raw.send(f"a LOGIN {USER} \"{PASSWORD}\"\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            raw.until_tagged(b"b")
            assert raw.line() == b"+ idling\r\n"
            elsewhere = sqlite3.connect(backend.database_path, isolation_level=None)
            try:
                elsewhere.executescript(
                    "BEGIN IMMEDIATE;"
                    "UPDATE folder SET highest_modseq = highest_modseq + 1 WHERE name = 'INBOX';"
                    "UPDATE message SET flags = '\\Answered', modseq = ("
                    " SELECT highest_modseq FROM folder WHERE folder.id = message.folder_id)"
                    " WHERE uid = 1;"
                    "COMMIT;"
                )
            finally:
                elsewhere.close()
            assert raw.line() == b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))\r\n"
            raw.send(b"DONE\r\n")
            assert raw.line() == b"c OK IDLE terminated.\r\n"
        finally:
            raw.close()
            running.close()
