"""ImapServer on 127.0.0.1:0, driven by real clients (imaplib, aioimaplib) and raw sockets.

Each test that reaches storage runs on the in-memory store, the SQL store on SQLite and
the SQL store on PostgreSQL (tests/imap_backends.py); mail "from elsewhere" arrives
through the backend's own delivery path while the server runs. Tests of the listener
alone (TLS, framing, limits) run once, on the memory store.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aioimaplib
import pytest

from gateway.imap.backend import Authenticator, FlagMode, FolderSnapshot, MailSession
from gateway.imap.config import ImapConfig
from gateway.imap.server import ImapServer
from gateway.tls import ensure_certificate, server_context
from tests.imap_backends import MailBackend, ObservedSession, memory_only

pytestmark = pytest.mark.integration

USER = "alice@example.org"
PASSWORD = "correct horse battery"
T = TypeVar("T")

LUNCH = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Tue, 2 Jan 2024 12:00:00 +0100\r\n"
    b"Message-ID: <lunch@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n'
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Noon at the caf\xc3\xa9?\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Noon at the caf\xc3\xa9?</p>\r\n"
    b"--alt--\r\n"
)
NOTE = b"From: carol@example.org\r\nSubject: Note\r\n\r\nA new one.\r\n"
NEWS = b"From: news@example.org\r\nSubject: News\r\n\r\nNothing new.\r\n"


class ServerThread:
    """An ImapServer on its own event loop in a background thread."""

    def __init__(
        self,
        config: ImapConfig,
        authenticator: Any,
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ImapServer(config, authenticator, ssl_context)
        self.port = self.call(self.server.start(host, 0))
        self.tls_port = (
            self.call(self.server.start(host, 0, implicit_tls=True)) if ssl_context else 0
        )

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.stop())
        self.call(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_certificate(tmp_path_factory.mktemp("tls"), "localhost")


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def seed_inbox(backend: MailBackend) -> MailBackend:
    """USER's account with LUNCH (unseen, UID 1) and NEWS (seen, UID 2) in INBOX."""
    backend.add_account(USER, PASSWORD)
    backend.deliver(USER, "INBOX", LUNCH)
    backend.deliver(USER, "INBOX", NEWS, flags=("\\Seen",))
    return backend


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    """Each backend in turn, seeded by `seed_inbox`."""
    return seed_inbox(mail_backend)


def make_server(
    backend: MailBackend, certificate: tuple[Path, Path] | None, **config: Any
) -> ServerThread:
    context = server_context(*certificate) if certificate else None
    return ServerThread(ImapConfig(**config), backend.authenticator, context)


@pytest.fixture
def server(backend: MailBackend, certificate: tuple[Path, Path]) -> Iterator[ServerThread]:
    """TLS before login even on loopback, as every client off loopback meets it."""
    running = make_server(backend, certificate, loopback_plaintext_login=False)
    yield running
    running.close()


@pytest.fixture
def plain_server(backend: MailBackend) -> Iterator[ServerThread]:
    """No TLS at all (plaintext login on loopback), for raw-socket protocol tests."""
    running = make_server(backend, None, bad_command_limit=5)
    yield running
    running.close()


class Raw:
    """A raw IMAP client socket: send bytes, read responses line by line."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            assert line, f"connection closed; got {lines}"
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def closed(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- imaplib: a whole session


def test_imaplib_session(server: ServerThread, backend: MailBackend, client_tls: ssl.SSLContext):
    with imaplib.IMAP4("127.0.0.1", server.port) as client:
        assert "STARTTLS" in client.capabilities and "LOGINDISABLED" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(USER, PASSWORD)
        client.starttls(ssl_context=client_tls)
        assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
        assert client.login(USER, PASSWORD)[0] == "OK"

        typ, folders = client.list()
        assert typ == "OK"
        assert b'(\\HasNoChildren) "/" "INBOX"' in folders
        assert b'(\\Sent \\HasNoChildren) "/" "Sent"' in folders
        assert client.lsub()[1] == folders

        assert client.select("INBOX") == ("OK", [b"2"])
        assert client.response("UIDVALIDITY")[1] == [
            str(backend.snapshot(USER, "INBOX").uid_validity).encode()
        ]

        typ, data = client.fetch("1:2", "(UID FLAGS INTERNALDATE RFC822.SIZE)")
        assert typ == "OK"
        assert re.fullmatch(
            rb"1 \(UID 1 FLAGS \(\\Recent\) "  # the first session to select INBOX
            rb'INTERNALDATE "[ \d]\d-\w{3}-\d{4} \d\d:\d\d:\d\d \+0000" '
            rb"RFC822.SIZE %d\)" % len(LUNCH),
            data[0],
        )
        assert data[1].startswith(b"2 (UID 2 FLAGS (\\Recent \\Seen) INTERNALDATE")

        typ, data = client.fetch("1", "(ENVELOPE)")
        assert data[0] == (
            b'1 (ENVELOPE ("Tue, 2 Jan 2024 12:00:00 +0100" "Lunch" '
            b'(("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) '
            b'(("Bob" NIL "bob" "example.org")) (("Alice" NIL "alice" "example.org")) '
            b'NIL NIL NIL "<lunch@example.org>"))'
        )
        typ, data = client.fetch("1", "(BODYSTRUCTURE)")
        assert data[0] == (
            b'1 (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 18 0 '
            b'NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "7bit" 25 0 '
            b'NIL NIL NIL NIL) "alternative" ("boundary" "alt") NIL NIL NIL))'
        )
        assert client.fetch("1", "(BODY)")[1][0].startswith(b'1 (BODY (("text" "plain"')

        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[1])")
        assert data[0] == (
            b"1 (BODY[HEADER.FIELDS (SUBJECT FROM)] {47}",
            b"From: Bob <bob@example.org>\r\nSubject: Lunch\r\n\r\n",
        )
        assert data[1] == (b" BODY[1] {18}", b"Noon at the caf\xc3\xa9?")
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM TO DATE)])")
        assert data[0][1].startswith(b"Message-ID: <lunch@example.org>\r\nMIME-Version")
        typ, data = client.fetch("1", "(BODY.PEEK[]<0.15> BODY.PEEK[TEXT] BODY.PEEK[HEADER])")
        assert data[0] == (b"1 (BODY[]<0> {15}", LUNCH[:15])
        header, text = LUNCH.split(b"\r\n\r\n", 1)
        assert data[1] == (b" BODY[TEXT] {%d}" % len(text), text)
        assert data[2] == (b" BODY[HEADER] {%d}" % (len(header) + 4), header + b"\r\n\r\n")
        typ, data = client.fetch("1", "(RFC822.HEADER)")
        assert data[0][1] == header + b"\r\n\r\n"
        assert backend.flags(USER, "INBOX", 1) == frozenset()

        assert client.uid("SEARCH", "UNSEEN") == ("OK", [b"1"])
        typ, data = client.fetch("1", "(BODY[])")  # no PEEK: sets \Seen, reported with FLAGS
        assert data[0] == (b"1 (BODY[] {%d}" % len(LUNCH), LUNCH)
        assert data[1] == b" FLAGS (\\Recent \\Seen))"
        assert client.uid("SEARCH", "UNSEEN") == ("OK", [b""])
        for item, expected in (("RFC822", LUNCH), ("RFC822.TEXT", text)):
            assert client.fetch("1", f"({item})")[1][0][1] == expected
        for macro in ("ALL", "FAST", "FULL"):
            assert client.fetch("1:*", macro)[0] == "OK"

        assert client.store("1", "-FLAGS", "\\Seen")[1] == [b"1 (UID 1 FLAGS (\\Recent))"]
        assert client.store("1", "+FLAGS", "\\Seen")[1] == [
            b"1 (UID 1 FLAGS (\\Recent \\Seen))"
        ]
        assert client.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert client.expunge() == ("OK", [b"1"])
        assert client.fetch("1", "(UID)")[1] == [b"1 (UID 2)"]

        client.response("EXISTS")  # forget what SELECT said
        backend.deliver(USER, "INBOX", NEWS)
        assert client.noop()[0] == "OK"
        assert client.response("EXISTS")[1] == [b"2"]
        assert client.uid("SEARCH", "ALL") == ("OK", [b"2 3"])
        assert client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)") == (
            "OK",
            [b'"INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 4)'],
        )
        assert client.close()[0] == "OK"
        assert client.logout()[0] == "BYE"
    assert [s.closed for s in backend.sessions] == [True]


def test_imaplib_wrong_password_and_authenticate_plain(
    server: ServerThread, client_tls: ssl.SSLContext
):
    with imaplib.IMAP4("127.0.0.1", server.port) as client:
        client.starttls(ssl_context=client_tls)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Authentication"):
            client.login(USER, "wrong")
        # imaplib's AUTHENTICATE uses the continuation form ("+ " then a base64 line)
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
        assert typ == "OK"
        assert client.select("INBOX", readonly=True) == ("OK", [b"2"])
        client.logout()


@memory_only
def test_login_is_disabled_before_starttls(server: ServerThread):
    raw = Raw(server.port)
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"LOGINDISABLED" in raw.greeting and b"STARTTLS" in raw.greeting
    raw.send(b"a LOGIN alice@example.org pw\r\n")
    assert raw.line() == b"a NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS first.\r\n"
    raw.send(b"b SELECT INBOX\r\n")
    assert raw.line() == b"b BAD Log in first.\r\n"
    raw.close()


# -- aioimaplib: a short session over implicit TLS


def test_aioimaplib_session(server: ServerThread, client_tls: ssl.SSLContext):
    async def session() -> None:
        client = aioimaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=client_tls)
        lost: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        client.protocol.conn_lost_cb = lambda exc: lost.done() or lost.set_result(exc)
        await client.wait_hello_from_server()
        assert (await client.login(USER, PASSWORD)).result == "OK"
        selected = await client.select("INBOX")
        assert selected.result == "OK"
        assert b"2 EXISTS" in selected.lines
        search = await client.search("UNSEEN")
        assert search.result == "OK" and search.lines[0] == b"1"
        fetched = await client.uid("fetch", "1:*", "(FLAGS BODY.PEEK[])")
        assert fetched.result == "OK"
        assert bytes(fetched.lines[1]) == LUNCH
        assert bytes(fetched.lines[4]) == NEWS
        assert (await client.logout()).result == "OK"
        async with asyncio.timeout(5):
            assert await lost is None  # the server hung up cleanly after LOGOUT

    asyncio.run(session())


# -- bad input over the wire


def test_malformed_commands_get_bad_and_the_connection_goes_on(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    assert b"AUTH=PLAIN" in raw.greeting and b"STARTTLS" not in raw.greeting
    for line, answer in (
        (b"a FROB\r\n", b"a BAD Unknown command FROB\r\n"),
        (b'b LOGIN "unterminated\r\n', b"b BAD Unterminated quoted string\r\n"),
        (b")junk\r\n", b"* BAD Expected a tag\r\n"),
        (b"c FETCH 1 FLAGS\r\n", b"c BAD Log in first.\r\n"),
    ):
        raw.send(line)
        assert raw.line() == answer
    raw.send(f'd LOGIN {USER} "{PASSWORD}"\r\ne SELECT INBOX\r\nf FETCH 0 FLAGS\r\n'.encode())
    assert raw.until_tagged(b"d")[-1].startswith(b"d OK")
    assert raw.until_tagged(b"e")[-1] == b"e OK [READ-WRITE] SELECT completed.\r\n"
    assert raw.line() == b"f BAD Invalid sequence set\r\n"
    raw.send(b"g NOOP\r\n")
    assert raw.line() == b"g OK NOOP completed.\r\n"
    raw.close()


def test_two_clients_of_one_account_see_each_other(
    plain_server: ServerThread, backend: MailBackend
):
    first, second = Raw(plain_server.port), Raw(plain_server.port)
    for raw in (first, second):
        raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\ns SELECT INBOX\r\n'.encode())
        assert raw.until_tagged(b"l")[-1].startswith(b"l OK")
        assert b"* 2 EXISTS\r\n" in raw.until_tagged(b"s")
    first.send(b"a STORE 2 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert first.until_tagged(b"a") == [b"a OK STORE completed.\r\n"]
    assert first.until_tagged(b"b") == [b"* 2 EXPUNGE\r\n", b"b OK EXPUNGE completed.\r\n"]
    second.send(b"c STORE 1 +FLAGS ($Later)\r\n")
    assert second.until_tagged(b"c") == [
        b"* FLAGS ($Later \\Answered \\Deleted \\Draft \\Flagged \\Seen)\r\n",
        b"* OK [PERMANENTFLAGS ($Later \\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)]"
        b" Flags permitted.\r\n",
        b"* 1 FETCH (UID 1 FLAGS ($Later))\r\n",
        b"c OK STORE completed.\r\n",
    ]
    assert backend.deliver(USER, "INBOX", NEWS) == 3
    second.send(b"d NOOP\r\n")
    assert second.until_tagged(b"d") == [
        b"* 2 EXPUNGE\r\n",
        b"* 2 EXISTS\r\n",
        b"* 1 RECENT\r\n",  # the first session to see it
        b"d OK NOOP completed.\r\n",
    ]
    first.send(b"e NOOP\r\n")
    assert first.until_tagged(b"e")[2:] == [  # after FLAGS and PERMANENTFLAGS with $Later
        b"* 1 FETCH (UID 1 FLAGS ($Later \\Recent))\r\n",  # recent here: it selected first
        b"* 2 EXISTS\r\n",
        b"* 1 RECENT\r\n",
        b"e OK NOOP completed.\r\n",
    ]
    for raw in (first, second):
        raw.close()


def test_oversize_literals(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    raw.send(b"a LOGIN {999999}\r\n")
    assert raw.line() == b"a BAD [TOOBIG] Literal too large\r\n"
    raw.send(b"b NOOP\r\n")  # the client did not send the literal: still in step
    assert raw.line() == b"b OK NOOP completed.\r\n"
    raw.send(b"c LOGIN {5}\r\n")
    assert raw.line() == b"+ Ready for literal data.\r\n"
    raw.send(f'{USER[:5]} "x"\r\n'.encode())
    assert raw.line() == b"c NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    raw.send(b"d LOGIN {999999+}\r\n" + b"x" * 1000)
    assert raw.line() == b"d BAD [TOOBIG] Literal too large\r\n"
    assert raw.line() == b"* BYE Protocol error.\r\n"
    assert raw.closed()
    raw.close()


@memory_only
def test_line_too_long_closes(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    raw.send(b"a NOOP " + b"x" * 70_000)
    assert raw.line() == b"a BAD [TOOBIG] Command line too long\r\n"
    assert raw.line() == b"* BYE Protocol error.\r\n"
    assert raw.closed()
    raw.close()


@memory_only
def test_too_many_bad_commands_say_bye(plain_server: ServerThread):
    raw = Raw(plain_server.port)
    raw.send(b"x\r\n" * 5)
    assert [raw.line() for _ in range(6)] == [b"x BAD Expected a space\r\n"] * 5 + [
        b"* BYE Too many invalid commands.\r\n"
    ]
    assert raw.closed()
    raw.close()


@memory_only
def test_starttls_with_pipelined_plaintext_hangs_up(server: ServerThread):
    raw = Raw(server.port)
    raw.send(b"a STARTTLS\r\nb LOGIN injected by a man in the middle\r\n")
    assert raw.line() == b"a OK Begin TLS negotiation now.\r\n"
    assert raw.closed()  # the pipelined line is never answered, not even over TLS
    raw.close()


# -- the server side of things


class _SlowAuthenticator:
    """Logs in as `inner` does, `delay` seconds later (Argon2id at a production cost)."""

    def __init__(self, inner: Authenticator, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    def login(self, username: str, password: str) -> MailSession:
        time.sleep(self.delay)
        return self.inner.login(username, password)


def test_login_runs_off_the_event_loop(backend: MailBackend):
    running = ServerThread(
        ImapConfig(),
        _SlowAuthenticator(backend.authenticator, delay=0.6),
        None,
    )
    try:
        slow = Raw(running.port)
        slow.send(f"a LOGIN {USER} {{{len(PASSWORD)}+}}\r\n{PASSWORD}\r\n".encode())
        time.sleep(0.1)
        fast = Raw(running.port)
        started = time.monotonic()
        fast.send(b"b NOOP\r\n")
        assert fast.line() == b"b OK NOOP completed.\r\n"
        assert time.monotonic() - started < 0.3  # not stuck behind the 0.6 s login
        assert select.select([slow.sock], [], [], 0)[0] == []  # which is still running
        assert slow.line().startswith(b"a OK [CAPABILITY")
        slow.close()
        fast.close()
    finally:
        running.close()


@memory_only
def test_idle_timeout_says_bye(backend: MailBackend):
    running = make_server(backend, None, idle_timeout=0.3)
    try:
        raw = Raw(running.port)
        raw.send(f'a LOGIN {USER} "{PASSWORD}"\r\nb NOOP\r\n'.encode())
        assert raw.until_tagged(b"a")[-1].startswith(b"a OK")
        assert raw.line() == b"b OK NOOP completed.\r\n"
        assert raw.line() == b"* BYE Autologout; idle for too long.\r\n"
        assert raw.closed()
        raw.close()
    finally:
        running.close()


def test_stop_says_bye_to_every_connection(backend: MailBackend):
    running = make_server(backend, None)
    clients = [Raw(running.port) for _ in range(3)]
    clients[0].send(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    assert clients[0].line().startswith(b"a OK")
    running.close()
    for raw in clients:
        assert raw.line() == b"* BYE Server shutting down.\r\n"
        assert raw.closed()
        raw.close()
    assert [s.closed for s in backend.sessions] == [True]


@memory_only
def test_connection_limit(backend: MailBackend):
    running = make_server(backend, None, max_connections=2)
    try:
        first, second = Raw(running.port), Raw(running.port)
        third = Raw(running.port)
        assert third.greeting == b"* BYE Too many connections; try later.\r\n"
        assert third.closed()
        for raw in (first, second, third):
            raw.close()
    finally:
        running.close()


class _BrokenSession(ObservedSession):
    """A real session whose snapshot fails with an error that quotes mail."""

    def snapshot(self, folder: str) -> FolderSnapshot:
        raise RuntimeError("Subject: secret plans for alice@example.org")


class _BrokenAuthenticator:
    def __init__(self, inner: Authenticator) -> None:
        self.inner = inner
        self.sessions: list[_BrokenSession] = []

    def login(self, username: str, password: str) -> MailSession:
        self.sessions.append(_BrokenSession(self.inner.login(username, password), []))
        return self.sessions[-1]


def test_unexpected_errors_say_bye_and_log_no_content(
    backend: MailBackend, caplog: pytest.LogCaptureFixture
):
    broken = _BrokenAuthenticator(backend.authenticator)
    running = ServerThread(ImapConfig(), broken, None)
    try:
        with caplog.at_level(logging.DEBUG, logger="gateway.imap"):
            raw = Raw(running.port)
            raw.send(f'a LOGIN {USER} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
            assert raw.line().startswith(b"a OK")
            assert raw.line() == b"* BYE Internal server error.\r\n"
            assert raw.closed()
            raw.close()
            raw = Raw(running.port)
            raw.send(b"c LOGIN nobody@example.org nope\r\n")
            assert raw.line().startswith(b"c NO [AUTHENTICATIONFAILED]")
            raw.close()
    finally:
        running.close()
    assert [s.closed for s in broken.sessions] == [True]
    text = caplog.text
    assert "RuntimeError" in text
    assert "secret" not in text and "example.org" not in text and PASSWORD not in text


# -- mbsync (isync): a strict real client, when installed


def test_mbsync_syncs_the_account_both_ways(
    server: ServerThread, backend: MailBackend, certificate: tuple[Path, Path], tmp_path: Path
):
    """mbsync (isync) over STARTTLS: pulls every folder, then pushes a flag, a local-only
    message (APPEND) and a local-only folder (CREATE) and pulls a server-side flag and new
    mail; every run, and the next one with nothing to do, exits 0."""
    mbsync = shutil.which("mbsync")
    if mbsync is None:
        pytest.skip("mbsync (Debian package isync) is not installed")
    maildir = tmp_path / "mail"
    maildir.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"IMAPAccount gw\nHost 127.0.0.1\nPort {server.port}\nUser {USER}\n"
        f'Pass "{PASSWORD}"\nSSLType STARTTLS\nCertificateFile {certificate[0]}\n'
        f"AuthMechs PLAIN\n\n"
        f"IMAPStore far\nAccount gw\n\n"
        f"MaildirStore near\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        f"Channel gw\nFar :far:\nNear :near:\nPatterns *\nCreate Both\nSync All\n"
        f"Expunge Both\nSyncState *\n"
    )

    def sync() -> None:
        done = subprocess.run(
            [mbsync, "-c", str(config), "-a"], capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def local(path: Path) -> bytes:
        """A Maildir copy as the server sent it: mbsync writes LF and adds X-TUID."""
        data = re.sub(rb"X-TUID: \S+\n", b"", path.read_bytes())
        return data.replace(b"\n", b"\r\n")

    def messages(folder: str) -> list[Path]:
        return sorted(p for sub in ("cur", "new") for p in (maildir / folder / sub).iterdir())

    def server_bodies(folder: str) -> list[bytes]:
        session = backend.other_session(USER)
        try:
            uids = [m.uid for m in session.snapshot(folder).messages]
            # mbsync marks what it uploads with X-TUID, to find it again if APPENDUID fails.
            bodies = (m.body for m in session.fetch(folder, uids))
            return sorted(re.sub(rb"X-TUID: \S+\r\n", b"", body) for body in bodies)
        finally:
            session.close()

    sync()
    inbox = messages("INBOX")
    assert sorted(local(p) for p in inbox) == sorted([LUNCH, NEWS])
    news = [p for p in inbox if local(p) == NEWS][0]
    assert news.name.endswith(":2,S")
    assert {p.name for p in maildir.iterdir()} >= {"INBOX", "Sent", "Drafts", "Trash"}

    # Near side: a flag, a message only here, a folder only here.
    lunch = [p for p in inbox if local(p) == LUNCH][0]
    lunch.rename(lunch.parent.parent / "cur" / (lunch.name.split(":2,")[0] + ":2,FS"))
    written = b"From: alice@example.org\nSubject: Written offline\n\nOn a train.\n"
    (maildir / "INBOX" / "new" / "1700000000.1.offline").write_bytes(written)
    for sub in ("cur", "new", "tmp"):
        (maildir / "Offline" / sub).mkdir(parents=True)
    (maildir / "Offline" / "cur" / "1700000000.2.offline:2,S").write_bytes(written)
    # Far side: a flag and new mail.
    other = backend.other_session(USER)
    try:
        other.store_flags("INBOX", [2], frozenset({"\\Answered"}), FlagMode.ADD)
    finally:
        other.close()
    backend.deliver(USER, "INBOX", NOTE)

    sync()
    assert backend.flags(USER, "INBOX", 1) == {"\\Seen", "\\Flagged"}
    pushed = written.replace(b"\n", b"\r\n")
    assert server_bodies("INBOX") == sorted([LUNCH, NEWS, NOTE, pushed])
    assert server_bodies("Offline") == [pushed]
    assert backend.flags(USER, "Offline", 1) == {"\\Seen"}
    inbox = messages("INBOX")
    assert sorted(local(p) for p in inbox) == sorted([LUNCH, NEWS, NOTE, pushed])
    assert [p for p in inbox if local(p) == NEWS][0].name.endswith(":2,RS")

    sync()  # nothing left to do: still 0, nothing doubled
    assert len(backend.uids(USER, "INBOX")) == 4
    assert len(messages("INBOX")) == 4
