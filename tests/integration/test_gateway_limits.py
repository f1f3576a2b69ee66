"""Bounded resources of a gateway process: memory of a large submission, the
per-transaction total, the SMTP connection cap. Real relay and gateway processes,
real smtplib clients and sockets; the limits come from the gateway's TOML file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import smtplib
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.keys import KdfCost
from gateway.homes import AdminHome
from gateway.provision import add_account
from tests.bubble_processes import DOMAIN, Account, Bubble

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
RECIPIENTS = 20
PART_BYTES = 24 * MiB
DELIVERY_BATCH_BYTES = 24 * MiB
MAX_TRANSACTION_BYTES = 440 * MiB
MAX_CONNECTIONS = 3
LIMITS = f"""
max_transaction_bytes = {MAX_TRANSACTION_BYTES}
outbox_part_bytes = {PART_BYTES}
delivery_batch_bytes = {DELIVERY_BATCH_BYTES}
max_smtp_connections = {MAX_CONNECTIONS}
"""


@pytest.fixture(scope="module")
def limits_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """A relay, alice's gateway with the limits above, and recipients in the directory only."""
    bubble = Bubble(tmp_path_factory.mktemp("limits"))
    try:
        bubble.init()
        bubble.add_account("alice", "alice-password-" + os.urandom(4).hex())
        with (bubble.root / "alice.toml").open("a") as config:
            config.write(LIMITS)
        admin = AdminHome.load(bubble.admin)
        for n in range(RECIPIENTS + 4):  # published, never running: RCPT needs the entry only
            asyncio.run(add_account(
                recipient(n), gateway_home=bubble.root / "gateways" / "recipients", admin=admin,
                relays=[bubble.relay_url], password="recipient-password", cost=KdfCost.minimum(),
            ))
        bubble.start_gateway("alice")
    except BaseException:
        bubble.kill_all()
        raise
    try:
        yield bubble
    finally:
        bubble.kill_all()


def recipient(n: int) -> str:
    return f"r{n}@{DOMAIN}"


def large_message(sender: str, size: int) -> bytes:
    """An RFC 5322 message of about `size` octets: a base64 body of random bytes."""
    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    head = f"From: {sender}\r\nTo: {recipient(0)}\r\nSubject: large\r\n\r\n".encode()
    return head + body


def status_kib(pid: int, field: str) -> int:
    """A memory figure of process `pid` from /proc (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def logged_in(account: Account) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", account.smtp_port, timeout=60)
    smtp.starttls(context=account.tls_context())
    smtp.login(account.address, account.password)
    return smtp


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def until_closed(sock: socket.socket) -> bytes:
    rest = b""
    while chunk := sock.recv(4096):
        rest += chunk
    return rest


def test_connections_over_the_cap_get_421_and_slots_come_back(limits_bubble: Bubble) -> None:
    port = limits_bubble.accounts["alice"].smtp_port
    open_: list[socket.socket] = []
    try:
        while True:  # connect until refused; sessions of earlier clients may still hold a slot
            sock = socket.create_connection(("127.0.0.1", port), 30)
            greeting = read_line(sock)
            if greeting.startswith(b"220 "):
                open_.append(sock)
                assert len(open_) <= MAX_CONNECTIONS
                continue
            assert greeting == b"421 4.7.0 Too many connections, try again later\r\n"
            assert until_closed(sock) == b""  # and the gateway closed it
            sock.close()
            break
        assert open_
        # One session ends: once the gateway has closed it, its slot is free again.
        first = open_.pop(0)
        first.sendall(b"QUIT\r\n")
        assert read_line(first).startswith(b"221")
        assert until_closed(first) == b""
        first.close()
        with socket.create_connection(("127.0.0.1", port), 30) as again:
            assert read_line(again).startswith(b"220 ")
            again.sendall(b"QUIT\r\n")
            assert read_line(again).startswith(b"221")
            until_closed(again)
    finally:
        for sock in open_:
            sock.close()


def test_peak_memory_of_a_large_submission_follows_the_settings(limits_bubble: Bubble) -> None:
    """20 MiB to 20 recipients: about one sealed part beyond the message, not 20 copies."""
    alice = limits_bubble.accounts["alice"]
    proc = limits_bubble.services["alice"].proc
    assert proc is not None
    message = large_message(alice.address, 20 * MiB)
    to = [recipient(n) for n in range(RECIPIENTS)]
    with logged_in(alice) as smtp:  # Argon2id's 64 MiB come and go before the baseline
        baseline = status_kib(proc.pid, "VmRSS") * 1024
        refused = smtp.sendmail(alice.address, to, message)
        code, reply = smtp.noop()
    assert refused == {} and code == 250, reply
    peak = status_kib(proc.pid, "VmHWM") * 1024
    # While DATA runs the message lives in about eight copies: aiosmtpd's list of lines
    # (twice its size in small objects), their join, the sanitized and the completed
    # message, and the three buffers of sealing one envelope (record, sealed, framed);
    # two more for what the allocator keeps across worker threads; two for the Sent
    # copy (the message with its Bcc line back, and that sealed). Beyond that: one
    # part of sealed envelopes and one delivery batch. Measured here: 205-230 MiB
    # above the baseline (15-20 of them the Sent copy); sealing all 20 at once, as
    # before, peaked at 1.1 GiB.
    bound = baseline + 12 * len(message) + PART_BYTES + DELIVERY_BATCH_BYTES
    assert peak <= bound, f"peak {peak / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB"


def test_size_times_recipients_over_the_limit_gets_552(limits_bubble: Bubble) -> None:
    alice = limits_bubble.accounts["alice"]
    to = [recipient(n) for n in range(RECIPIENTS + 4)]
    message = large_message(alice.address, MAX_TRANSACTION_BYTES // len(to) + MiB)
    fits = MAX_TRANSACTION_BYTES // len(message)  # recipients this message can have
    with logged_in(alice) as smtp:
        # Without a declared SIZE the gateway learns the size at DATA.
        assert smtp.mail(alice.address)[0] == 250
        for address in to:
            assert smtp.rcpt(address)[0] == 250
        code, reply = smtp.data(message)
        assert (code, reply[:35]) == (552, b"5.3.4 Message size times recipients")
        # smtplib declares SIZE: the recipients past the limit are refused at RCPT, and
        # the message goes to the others.
        refused = smtp.sendmail(alice.address, to, message)
        assert sorted(refused) == sorted(to[fits:])
        assert {code for code, _ in refused.values()} == {552}
    assert "sealing or queueing failed" not in limits_bubble.log_text("alice")


def test_a_declared_size_over_the_limit_is_refused_at_rcpt(limits_bubble: Bubble) -> None:
    """A client that declares SIZE= learns at RCPT, before it sends DATA."""
    alice = limits_bubble.accounts["alice"]
    per_recipient = MAX_TRANSACTION_BYTES // RECIPIENTS
    with logged_in(alice) as smtp:
        assert smtp.mail(alice.address, [f"SIZE={per_recipient}"])[0] == 250
        for n in range(RECIPIENTS):
            assert smtp.rcpt(recipient(n))[0] == 250
        code, reply = smtp.rcpt(recipient(RECIPIENTS))
        assert (code, reply[:5]) == (552, b"5.3.4")
        smtp.rset()


def rows(database: Path, query: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute(query).fetchall()


def test_a_crash_between_parts_delivers_to_nobody(limits_bubble: Bubble) -> None:
    """Killed while a message's parts are being committed: nothing of it is ever deposited.

    Runs last in this module: it kills alice's gateway and starts it again.
    """
    alice = limits_bubble.accounts["alice"]
    database = alice.home / "gateway.db"
    message = large_message(alice.address, 10 * MiB)  # parts of two envelopes: 12 commits
    to = [recipient(n) for n in range(RECIPIENTS + 4)]
    smtp = logged_in(alice)
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.mail(alice.address)
        for address in to:
            smtp.rcpt(address)
        smtp.docmd("DATA")
        smtp.send(message + b"\r\n.\r\n")
        deadline = time.monotonic() + 30
        while not rows(database, "SELECT 1 FROM outbox_hold LIMIT 1"):  # first part is durable
            assert time.monotonic() < deadline, "no part was committed"
            time.sleep(0.005)
        limits_bubble.services["alice"].kill()
        assert smtp.getreply()[0] != 250  # the connection dies: the client was never told 250
    smtp.close()
    held = {bytes(row[0]) for row in rows(database, "SELECT envelope_id FROM outbox_hold")}
    assert 0 < len(held) < len(to)  # the crash fell between the parts

    limits_bubble.start_gateway("alice")
    assert not rows(database, "SELECT 1 FROM outbox_hold")
    queued = {bytes(row[0]) for row in rows(database, "SELECT envelope_id FROM outbox_item")}
    assert not held & queued  # discarded at start, before delivery could take them
    stored = rows(limits_bubble.relay_home / "relay.db", "SELECT envelope_id FROM envelopes")
    assert not held & {bytes(row[0]) for row in stored}
    assert f"{len(held)} envelope(s) of an unfinished submission discarded" in (
        limits_bubble.log_text("alice")
    )
