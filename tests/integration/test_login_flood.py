"""A login flood against a running gateway does not hold up logged-in sessions, and
neither does an IMAP command waiting on the store's write lock.

The gateway runs in this process (on its own event loop in a thread) so that the test
can hold its Argon2id pool busy on purpose: one check that waits for an event fills the
only worker, and real wrong-password logins over SMTP and IMAP sockets fill the queue.
While the pool stays full, alice's logged-in IMAP session answers NOOP and FETCH, her
logged-in SMTP session submits a message (sealed and committed to the outbox), and
delivery and fetch bring it to her INBOX; only then is the pool let go. No assertion
depends on how long anything took (deadlines only turn a hang into a failure).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import imaplib
import secrets
import select
import smtplib
import sqlite3
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridge.keys import KdfCost
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.config import GatewayConfig
from gateway.homes import DATABASE_FILE, AdminHome
from gateway.login_gate import KdfPool
from gateway.provision import add_account
from gateway.service import Gateway
from tests.bubble_processes import free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
DOMAIN = "flood.bubble"
ALICE = f"alice@{DOMAIN}"
QUEUE = 3


@dataclass
class Running:
    loop: asyncio.AbstractEventLoop
    gateway: Gateway
    password: str
    tls: ssl.SSLContext

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    @property
    def pool(self) -> KdfPool:
        assert self.gateway.gate is not None
        return self.gateway.gate.pool


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    admin = AdminHome.create(tmp_path / "admin", DOMAIN)
    relay = RelayServer(
        RelayConfig(home=tmp_path / "relay", port=free_port(), trusted_roots=(admin.root.public,))
    )
    password = "alice-" + secrets.token_hex(8)
    gateway = Gateway(
        GatewayConfig(
            home=tmp_path / "gateway",
            smtp_port=0,
            imap_port=0,
            poll_interval=0.2,
            kdf_workers=1,
            kdf_queue=QUEUE,
            login_failure_delay=0.0,
        )
    )

    async def start() -> None:
        await relay.start()
        await add_account(
            ALICE,
            gateway_home=tmp_path / "gateway",
            admin=admin,
            relays=[f"http://127.0.0.1:{relay.config.port}"],
            password=password,
            cost=KdfCost.interactive(),
        )
        await gateway.start()

    async def stop() -> None:
        await gateway.stop()
        await relay.stop()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(60)
        tls = ssl.create_default_context(cafile=str(tmp_path / "gateway" / "tls" / "cert.pem"))
        yield Running(loop, gateway, password, tls)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def imap_client(run: Running) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", run.gateway.imap_port, timeout=60)
    imap.starttls(ssl_context=run.tls)
    return imap


def smtp_client(run: Running) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", run.gateway.smtp_port, timeout=60)
    smtp.starttls(context=run.tls)
    smtp.ehlo()
    return smtp


def imap_guess(run: Running, user: str) -> str:
    imap = imap_client(run)
    try:
        imap.login(user, "guess-" + secrets.token_hex(4))
    except imaplib.IMAP4.error as err:
        return str(err)
    finally:
        imap.logout()
    return "OK"


def smtp_guess(run: Running, user: str) -> int:
    smtp = smtp_client(run)
    smtp.user, smtp.password = user, "guess-" + secrets.token_hex(4)
    try:
        return smtp.auth("PLAIN", smtp.auth_plain)[0]
    except smtplib.SMTPAuthenticationError as err:
        return err.smtp_code
    finally:
        smtp.close()


def note(token: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, ALICE, "note to self"
    msg.set_content(f"written during a login flood {token}")
    return msg


def inbox_count(imap: imaplib.IMAP4) -> int:
    typ, data = imap.noop()
    assert typ == "OK"
    typ, data = imap.search(None, "ALL")
    assert typ == "OK"
    return len(data[0].split())


def wait_for_inbox(imap: imaplib.IMAP4, count: int, *, while_held: KdfPool | None = None) -> None:
    deadline = time.monotonic() + 30
    while inbox_count(imap) < count:
        if while_held is not None:
            assert while_held.in_pool == 1 + QUEUE
        assert time.monotonic() < deadline, "the message never reached INBOX"
        time.sleep(0.1)


def sessions_with_one_message(run: Running, token: str) -> tuple[imaplib.IMAP4, smtplib.SMTP]:
    """alice logged in over IMAP (INBOX selected) and SMTP, with one note in her INBOX."""
    imap = imap_client(run)
    imap.login(ALICE, run.password)
    imap.select("INBOX")
    smtp = smtp_client(run)
    smtp.login(ALICE, run.password)
    assert smtp.send_message(note(token)) == {}
    wait_for_inbox(imap, 1)
    return imap, smtp


def test_logged_in_sessions_and_mail_go_on_while_a_login_flood_fills_the_pool(
    running: Running,
) -> None:
    run = running
    imap, smtp = sessions_with_one_message(run, "before")

    release = threading.Event()
    held = run.pool.submit(lambda: release.wait(120))
    flood = concurrent.futures.ThreadPoolExecutor(max_workers=QUEUE)
    try:
        guesses = [
            flood.submit(imap_guess, run, ALICE),
            flood.submit(smtp_guess, run, ALICE),
            flood.submit(imap_guess, run, f"nobody@{DOMAIN}"),
        ]
        deadline = time.monotonic() + 30
        while run.pool.in_pool < 1 + QUEUE:  # every guess is waiting for the worker
            assert time.monotonic() < deadline, "the guesses never reached the pool"
            time.sleep(0.05)

        # One more login than the queue holds is refused at once, as a temporary failure.
        assert smtp_guess(run, ALICE) == 454
        assert "[UNAVAILABLE] Login is unavailable; try again later." in imap_guess(run, ALICE)

        # The logged-in sessions are served while the pool is full.
        typ, _ = imap.noop()
        assert typ == "OK"
        typ, data = imap.fetch("1", "(FLAGS BODY.PEEK[])")
        assert typ == "OK" and b"written during a login flood before" in data[0][1]
        token = secrets.token_hex(8)
        assert smtp.send_message(note(token)) == {}  # sealed, committed: 250
        wait_for_inbox(imap, 2, while_held=run.pool)  # deposited, fetched, stored
        typ, data = imap.fetch("2", "(BODY.PEEK[TEXT])")
        assert typ == "OK" and token.encode() in data[0][1]

        assert run.pool.in_pool == 1 + QUEUE and not any(g.done() for g in guesses)
    finally:
        release.set()
        flood.shutdown(wait=True)
    held.result(30)
    assert "[AUTHENTICATIONFAILED]" in guesses[0].result()
    assert guesses[1].result() == 535
    assert "[AUTHENTICATIONFAILED]" in guesses[2].result()
    assert run.pool.in_pool == 0
    smtp.quit()
    imap.logout()


def test_sessions_and_smtp_go_on_while_a_store_waits_on_the_write_lock(
    running: Running,
) -> None:
    """An IMAP STORE waits on the store's SQLite write lock, held here as another process
    would hold it; meanwhile another IMAP session and an SMTP session, served on the same
    event loop, are answered, and the STORE completes once the lock is let go."""
    run = running
    other, smtp = sessions_with_one_message(run, "before the lock")
    blocked = imap_client(run)
    blocked.login(ALICE, run.password)
    assert blocked.select("INBOX") == ("OK", [b"1"])

    holder = sqlite3.connect(run.gateway.config.home / DATABASE_FILE, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        tag = blocked._new_tag()  # noqa: SLF001 -- imaplib would wait for the answer
        blocked.send(tag + b" STORE 1 +FLAGS (\\Flagged)\r\n")

        assert other.noop()[0] == "OK"
        typ, data = other.fetch("1", "(BODY.PEEK[TEXT])")
        assert typ == "OK" and b"before the lock" in data[0][1]
        assert smtp.noop()[0] == 250
        assert smtp.ehlo()[0] == 250
        assert select.select([blocked.sock], [], [], 0)[0] == []  # the STORE still waits
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert blocked.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"
    assert blocked.readline() == tag + b" OK STORE completed.\r\n"
    smtp.quit()
    blocked.logout()
    other.logout()
