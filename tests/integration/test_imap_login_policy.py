"""Dovecot's login rule over real sockets: passwords in clear only from a loopback peer.

A client on 127.0.0.1 (or ::1) may LOGIN or AUTHENTICATE PLAIN without STARTTLS; a
client at any other address sees LOGINDISABLED, and no AUTH=PLAIN, until STARTTLS. The
non-loopback case needs an address of this host that is not a loopback one: the test
binds the server to it and connects from it, so the server sees that address as its
peer, exactly as it would a remote client's. A host with only loopback addresses skips
that test (the rule itself is still covered by tests/unit/test_imap_state.py).
"""

from __future__ import annotations

import base64
import imaplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.imap.config import ImapConfig
from gateway.imap.server import ImapServer
from gateway.tls import server_context
from tests.imap_backends import MailBackend, memory_only
from tests.integration.test_imap_server import (
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)
from tests.integration.test_imap_server import certificate as certificate  # the fixture

pytestmark = pytest.mark.integration


def non_loopback_address() -> str | None:
    """This host's own source address towards the outside (IPv4), if it has one. A UDP
    connect sends nothing; it only picks the route and so the local address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # TEST-NET-1: never answered, only routed
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """Trusts the test certificate (made for "localhost") whatever address is dialled."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.check_hostname = False
    return context


@memory_only
def test_loopback_client_logs_in_without_starttls(
    backend: MailBackend, certificate: tuple[Path, Path]
):
    running = make_server(backend, certificate)
    try:
        with imaplib.IMAP4("127.0.0.1", running.port, timeout=10) as client:
            caps = set(client.capabilities)
            assert {"STARTTLS", "AUTH=PLAIN"} <= caps and "LOGINDISABLED" not in caps
            assert client.login(USER, PASSWORD)[0] == "OK"
            assert client.select("INBOX") == ("OK", [b"2"])
            client.logout()
        raw = Raw(running.port)
        raw.send(b"a AUTHENTICATE PLAIN " + _plain(USER, PASSWORD) + b"\r\n")
        assert raw.until_tagged(b"a")[-1].startswith(b"a OK [CAPABILITY ")
        raw.close()
    finally:
        running.close()


@memory_only
def test_ipv6_loopback_counts_as_loopback(backend: MailBackend, certificate: tuple[Path, Path]):
    try:
        socket.socket(socket.AF_INET6).close()
        running = ServerThread(
            ImapConfig(), backend.authenticator, server_context(*certificate), "::1"
        )
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    try:
        raw = Raw(running.port, "::1")
        assert b"AUTH=PLAIN" in raw.greeting and b"LOGINDISABLED" not in raw.greeting
        raw.send(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        assert raw.until_tagged(b"a")[-1].startswith(b"a OK")
        raw.close()
    finally:
        running.close()


@memory_only
def test_loopback_plaintext_can_be_forbidden(
    backend: MailBackend, certificate: tuple[Path, Path], client_tls: ssl.SSLContext
):
    running = make_server(backend, certificate, loopback_plaintext_login=False)
    try:
        _login_needs_starttls("127.0.0.1", running.port, client_tls)
    finally:
        running.close()


@pytest.fixture
def outside_server(
    backend: MailBackend, certificate: tuple[Path, Path]
) -> Iterator[tuple[str, ServerThread]]:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback address to be a remote peer from")
    running = ServerThread(
        ImapConfig(), backend.authenticator, server_context(*certificate), address
    )
    yield address, running
    running.close()


@memory_only
def test_client_at_another_address_must_starttls_first(
    outside_server: tuple[str, ServerThread], client_tls: ssl.SSLContext
):
    address, running = outside_server
    _login_needs_starttls(address, running.port, client_tls)
    # Over implicit TLS no STARTTLS is needed, from any address.
    with imaplib.IMAP4_SSL(address, running.tls_port, ssl_context=client_tls) as client:
        assert "AUTH=PLAIN" in client.capabilities and "STARTTLS" not in client.capabilities
        assert client.login(USER, PASSWORD)[0] == "OK"
        client.logout()


def test_a_server_that_needs_tls_for_every_login_needs_a_certificate():
    with pytest.raises(ValueError, match="ssl_context"):
        ImapServer(ImapConfig(loopback_plaintext_login=False), object(), None)  # type: ignore[arg-type]


def _login_needs_starttls(host: str, port: int, client_tls: ssl.SSLContext) -> None:
    raw = Raw(port, host)
    assert b"LOGINDISABLED" in raw.greeting and b"STARTTLS" in raw.greeting
    assert b"AUTH=PLAIN" not in raw.greeting
    raw.send(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    assert raw.line() == b"a NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS first.\r\n"
    raw.send(b"b AUTHENTICATE PLAIN " + _plain(USER, PASSWORD) + b"\r\n")
    assert raw.line() == b"b NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS first.\r\n"
    raw.close()
    with imaplib.IMAP4(host, port, timeout=10) as client:
        client.starttls(ssl_context=client_tls)
        caps = set(client.capabilities)
        assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps
        assert client.login(USER, PASSWORD)[0] == "OK"
        client.logout()


def _plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())
