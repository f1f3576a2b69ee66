"""Every IMAP limit, set in a gateway TOML file, overflowed over a real socket.

Each server here gets its `ImapConfig` the way `sealgate gateway serve` does: the TOML
file is loaded into `GatewayConfig` and `imap_config()` hands its values to
`ImapServer`. Each test checks the precise answer a client gets when it crosses the
limit: the tagged `BAD`/`NO` with its response code, and `* BYE` before the server
closes whenever the connection cannot go on.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.settings import load_settings, read_toml
from gateway.config import GatewayConfig
from gateway.imap.config import ImapConfig
from gateway.tls import server_context
from tests.imap_backends import MailBackend, make_backend, memory_only
from tests.integration.test_imap_server import PASSWORD, USER, Raw, ServerThread, seed_inbox
from tests.integration.test_imap_server import certificate as certificate  # the fixture

pytestmark = pytest.mark.integration

LIMITS = """
imap_max_line = 1024
imap_max_literal = 2048
imap_max_command = 8192
max_message_bytes = 10000
imap_max_nesting = 4
imap_bad_command_limit = 3
imap_max_login_failures = 2
imap_max_connections = 2
"""
BYE_PROTOCOL = b"* BYE Protocol error.\r\n"


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


def start(
    backend: MailBackend, tmp_path: Path, settings: str,
    tls: tuple[Path, Path] | None = None,
) -> ServerThread:
    """A server whose limits come from a gateway TOML file holding `settings`."""
    path = tmp_path / "gateway.toml"
    path.write_text(settings)
    config = load_settings(GatewayConfig, read_toml(path), {"home": tmp_path}, source=str(path))
    context = server_context(*tls) if tls else None
    return ServerThread(config.imap_config(), backend.authenticator, context)


@pytest.fixture
def server(backend: MailBackend, tmp_path: Path) -> Iterator[ServerThread]:
    running = start(backend, tmp_path, LIMITS)
    yield running
    running.close()


def logged_in(server: ServerThread) -> Raw:
    raw = Raw(server.port)
    raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    assert raw.until_tagged(b"l")[-1].startswith(b"l OK")
    return raw


@memory_only
def test_line_length(server: ServerThread):
    raw = Raw(server.port)
    raw.send(b"a NOOP " + b"x" * 1017 + b"\r\n")  # 1026 octets with CRLF: 2 too many
    assert raw.line() == b"a BAD [TOOBIG] Command line too long\r\n"
    assert raw.line() == BYE_PROTOCOL
    assert raw.closed()
    raw.close()
    raw = Raw(server.port)
    raw.send(b"b NOOP " + b"x" * 1015 + b"\r\n")  # exactly 1024: accepted
    answer = raw.line()  # NOOP takes no argument, but the line was read whole
    assert answer.startswith(b"b BAD ") and b"TOOBIG" not in answer
    raw.send(b"c NOOP\r\n")
    assert raw.line() == b"c OK NOOP completed.\r\n"
    raw.close()


@memory_only
def test_literal_size(server: ServerThread):
    raw = Raw(server.port)
    raw.send(b"a LOGIN {2049}\r\n")  # refused before the client sends it: still in step
    assert raw.line() == b"a BAD [TOOBIG] Literal too large\r\n"
    raw.send(b"b NOOP\r\n")
    assert raw.line() == b"b OK NOOP completed.\r\n"
    raw.send(b"c LOGIN {2049+}\r\n" + b"x" * 2049)  # already on its way: no way back in step
    assert raw.line() == b"c BAD [TOOBIG] Literal too large\r\n"
    assert raw.line() == BYE_PROTOCOL
    assert raw.closed()
    raw.close()


@memory_only
def test_command_size(server: ServerThread):
    raw = logged_in(server)
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    sent = 0
    raw.send(b"a SEARCH HEADER Subject {2000}\r\n")
    while True:  # literals of 2000 octets each, until the command would pass 8192
        assert raw.line() == b"+ Ready for literal data.\r\n"
        raw.send(b"y" * 2000 + b" HEADER Subject {2000}\r\n")
        sent += 1
        if sent == 4:
            break
    assert raw.line() == b"a BAD [TOOBIG] Literal too large\r\n"
    raw.send(b"b NOOP\r\n")
    assert raw.until_tagged(b"b")[-1] == b"b OK NOOP completed.\r\n"
    raw.close()


@memory_only
def test_append_size(server: ServerThread, backend: MailBackend):
    raw = Raw(server.port)
    raw.send(b"a APPEND INBOX {2049}\r\n")  # before login: max_literal
    assert raw.line() == b"a NO [TOOBIG] Messages are limited to 2048 octets\r\n"
    raw.close()
    raw = logged_in(server)
    message = b"Subject: full\r\n\r\n"
    message += b"z" * (10_000 - len(message))
    raw.send(b"b APPEND INBOX {10000}\r\n")  # max_message_bytes exactly: taken
    assert raw.line() == b"+ Ready for literal data.\r\n"
    raw.send(message + b"\r\n")
    assert raw.until_tagged(b"b")[-1].startswith(b"b OK [APPENDUID ")
    raw.send(b"c APPEND INBOX {10001}\r\n")  # refused before a byte of it is sent
    assert raw.line() == b"c NO [TOOBIG] Messages are limited to 10000 octets\r\n"
    raw.send(b"d APPEND INBOX {10001+}\r\n" + message + b"z")
    assert raw.line() == b"d BAD [TOOBIG] Literal too large\r\n"
    assert raw.line() == BYE_PROTOCOL
    assert raw.closed()
    raw.close()
    assert len(backend.uids(USER, "INBOX")) == 3  # LUNCH, NEWS and the one that fitted


@memory_only
def test_nesting_depth(server: ServerThread):
    raw = logged_in(server)
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    raw.send(b"a SEARCH (((ALL)))\r\n")  # three lists and the key: four levels
    assert raw.until_tagged(b"a")[-1] == b"a OK SEARCH completed.\r\n"
    raw.send(b"b SEARCH ((((ALL))))\r\n")
    assert raw.line() == b"b BAD Too deeply nested\r\n"
    raw.send(b"c NOOP\r\n")
    assert raw.until_tagged(b"c")[-1] == b"c OK NOOP completed.\r\n"
    raw.close()


@memory_only
def test_bad_command_count(server: ServerThread):
    raw = Raw(server.port)
    raw.send(b"a FROB\r\nb FROB\r\nc NOOP\r\n")  # a good command starts the count again
    assert [raw.line() for _ in range(3)] == [
        b"a BAD Unknown command FROB\r\n",
        b"b BAD Unknown command FROB\r\n",
        b"c OK NOOP completed.\r\n",
    ]
    raw.send(b"d FROB\r\ne FROB\r\nf FROB\r\n")
    assert [raw.line() for _ in range(4)] == [
        b"d BAD Unknown command FROB\r\n",
        b"e BAD Unknown command FROB\r\n",
        b"f BAD Unknown command FROB\r\n",
        b"* BYE Too many invalid commands.\r\n",
    ]
    assert raw.closed()
    raw.close()


@memory_only
def test_login_failures(server: ServerThread):
    raw = Raw(server.port)
    raw.send(f"a LOGIN {USER} wrong\r\n".encode())
    assert raw.line() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    raw.send(f"b LOGIN {USER} wrong-again\r\n".encode())
    assert raw.line() == b"b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert raw.line() == b"* BYE Too many failed logins.\r\n"
    assert raw.closed()
    raw.close()


@memory_only
def test_connections(server: ServerThread):
    first, second = Raw(server.port), Raw(server.port)
    assert first.greeting.startswith(b"* OK ") and second.greeting.startswith(b"* OK ")
    third = Raw(server.port)
    assert third.greeting == b"* BYE Too many connections; try later.\r\n"
    assert third.closed()
    third.close()
    first.send(b"a LOGOUT\r\n")
    assert first.until_tagged(b"a")[-1] == b"a OK LOGOUT completed.\r\n"
    assert first.closed()
    first.close()
    deadline = time.monotonic() + 10  # the server frees the slot once it has closed
    while (again := Raw(server.port)).greeting.startswith(b"* BYE"):
        again.close()
        assert time.monotonic() < deadline, "the closed connection's slot never came back"
        time.sleep(0.05)
    assert again.greeting.startswith(b"* OK ")
    again.close()
    second.close()


@memory_only
def test_idle_time_before_and_after_login(backend: MailBackend, tmp_path: Path):
    running = start(
        backend, tmp_path, "imap_login_idle_timeout = 0.5\nimap_idle_timeout = 3.0\n"
    )
    try:
        silent = Raw(running.port)
        active = logged_in(running)
        started = time.monotonic()
        assert silent.line() == b"* BYE Autologout; idle for too long.\r\n"
        assert silent.closed()
        silent.close()
        waited = time.monotonic() - started
        assert waited < 3.0  # the login timeout, not the logged-in one, ended it
        # The logged-in client, as silent meanwhile, is still served...
        active.send(b"a NOOP\r\n")
        assert active.until_tagged(b"a")[-1] == b"a OK NOOP completed.\r\n"
        # ...until it too is silent for its own, longer timeout.
        assert active.line() == b"* BYE Autologout; idle for too long.\r\n"
        assert active.closed()
        active.close()
    finally:
        running.close()


@memory_only
def test_tls_handshake_time(
    backend: MailBackend, tmp_path: Path, certificate: tuple[Path, Path]
):
    running = start(backend, tmp_path, "imap_tls_handshake_timeout = 0.5\n", tls=certificate)
    try:
        with socket.create_connection(("127.0.0.1", running.tls_port), timeout=10) as sock:
            assert sock.recv(1) == b""  # no ClientHello sent: hung up, no greeting
        context = ssl.create_default_context(cafile=str(certificate[0]))
        with socket.create_connection(("127.0.0.1", running.tls_port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.recv(4096).startswith(b"* OK [CAPABILITY ")
    finally:
        running.close()


def test_a_stored_append_is_not_kept_by_its_connection(tmp_path: Path):
    """Once an APPENDed message is sealed and stored, the idle connection holds none of it
    (the SQL store keeps only the sealed copy, in the database, not in memory)."""
    size = 8 * 2**20
    message = b"Subject: big\r\n\r\n" + os.urandom(size)
    with make_backend("sqlite", tmp_path) as backend:
        seed_inbox(backend)
        running = ServerThread(ImapConfig(max_append=2 * size), backend.authenticator, None)
        try:
            raw = logged_in(running)
            tracemalloc.start()
            raw.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
            assert raw.until_tagged(b"a")[-1].startswith(b"a OK [APPENDUID ")
            deadline = time.monotonic() + 10  # the server's thread may still be unwinding
            while (held := tracemalloc.get_traced_memory()[0]) > size // 4:
                assert time.monotonic() < deadline, f"{held / 2**20:.1f} MiB still held"
                time.sleep(0.05)
            raw.close()
        finally:
            tracemalloc.stop()
            running.close()
