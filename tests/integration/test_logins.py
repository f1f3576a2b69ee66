"""Password guessing against gateway processes, with smtplib and imaplib from several
loopback source addresses (Linux routes all of 127.0.0.0/8 to lo).

bob's gateway blocks a client address after 4 failed logins (its TOML settings); each
test guesses from its own source address, so the tests do not block one another.
alice's account is sealed at the default (moderate) Argon2id cost.
"""

from __future__ import annotations

import imaplib
import secrets
import smtplib
import socket
import sqlite3
import struct
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import nacl.pwhash
import pytest

from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import fetch_all, wait_for_messages

pytestmark = pytest.mark.integration

BLOCK_AFTER = 4
BOB_SETTINGS = {
    "login_block_failures": BLOCK_AFTER,
    "login_block_seconds": 3600.0,
    "login_failure_delay": 0.05,
    "login_failure_delay_max": 0.2,
}
BLOCKED_SMTP = b"4.7.0 Too many failed logins from your address; try again later"


@pytest.fixture(scope="module")
def logins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    bubble = Bubble(tmp_path_factory.mktemp("logins"))
    try:
        bubble.init()
        bubble.add_account("alice", "alice-" + secrets.token_hex(8), kdf_cost=None)
        bubble.add_account("bob", "bob-" + secrets.token_hex(8), settings=BOB_SETTINGS)
        bubble.start_gateway("alice", "bob")
        yield bubble
    finally:
        bubble.kill_all()


class SourceIMAP(imaplib.IMAP4):
    """imaplib from a chosen local address."""

    def __init__(self, source: str, port: int) -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def smtp_auth(account: Account, source: str, password: str) -> tuple[int, bytes, smtplib.SMTP]:
    """One AUTH PLAIN on a fresh connection from `source`: (code, text, the open client)."""
    smtp = smtplib.SMTP("127.0.0.1", account.smtp_port, timeout=30,
                        source_address=(source, 0))
    smtp.starttls(context=account.tls_context())
    smtp.ehlo()
    smtp.user, smtp.password = account.address, password
    try:
        code, text = smtp.auth("PLAIN", smtp.auth_plain)
    except smtplib.SMTPAuthenticationError as err:
        code, text = err.smtp_code, err.smtp_error
    return code, text, smtp


def smtp_attempt(account: Account, source: str, password: str) -> tuple[int, bytes]:
    code, text, smtp = smtp_auth(account, source, password)
    if code == 421:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()  # the gateway hung up
    smtp.close()
    return code, text


def imap_login(account: Account, source: str, password: str) -> tuple[SourceIMAP, str]:
    """One LOGIN on a fresh connection from `source`: the client and "" when it worked, or
    the text of the tagged NO."""
    imap = SourceIMAP(source, account.imap_port)
    imap.starttls(ssl_context=account.tls_context())
    try:
        imap.login(account.address, password)
    except imaplib.IMAP4.error as err:
        return imap, str(err)
    return imap, ""


def imap_refused(account: Account, source: str, password: str) -> str:
    """A LOGIN answered NO on a connection that stays open; the NO's text."""
    imap, refusal = imap_login(account, source, password)
    assert refusal
    imap.logout()
    return refusal


def imap_blocked(account: Account, source: str, password: str) -> str:
    """A LOGIN answered NO, then BYE, then the end of the connection; the NO's text."""
    imap, refusal = imap_login(account, source, password)
    assert imap.readline() == b"* BYE Too many failed logins.\r\n"
    assert imap.readline() == b""
    imap.shutdown()
    return refusal


def test_smtp_guesses_from_one_address_end_in_421_while_the_owner_logs_in(
    logins: Bubble,
) -> None:
    bob = logins.accounts["bob"]
    for _ in range(BLOCK_AFTER - 1):
        code, text = smtp_attempt(bob, "127.0.0.2", "guess-" + secrets.token_hex(4))
        assert (code, text[:5]) == (535, b"5.7.8")
    assert smtp_attempt(bob, "127.0.0.2", "one-guess-too-many") == (421, BLOCKED_SMTP)
    # Blocked: even the right password is not looked at, over any new connection.
    assert smtp_attempt(bob, "127.0.0.2", bob.password) == (421, BLOCKED_SMTP)
    # The same account from another address logs in and submits.
    code, _, smtp = smtp_auth(bob, "127.0.0.3", bob.password)
    assert code == 235
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = bob.address, bob.address, "still mine"
    msg.set_content("after the guessing")
    assert smtp.send_message(msg) == {}
    smtp.quit()


def test_imap_guesses_from_one_address_end_in_unavailable_and_bye(logins: Bubble) -> None:
    bob = logins.accounts["bob"]
    for _ in range(BLOCK_AFTER - 1):
        refusal = imap_refused(bob, "127.0.0.4", "guess-" + secrets.token_hex(4))
        assert "[AUTHENTICATIONFAILED]" in refusal
    blocked = "[UNAVAILABLE] Too many failed logins from your address; try again later."
    assert blocked in imap_blocked(bob, "127.0.0.4", "one-guess-too-many")
    assert blocked in imap_blocked(bob, "127.0.0.4", bob.password)  # not even looked at
    imap = SourceIMAP("127.0.0.4", bob.imap_port)  # AUTHENTICATE PLAIN is refused alike
    imap.starttls(ssl_context=bob.tls_context())
    plain = f"\0{bob.address}\0{bob.password}".encode()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Too many failed logins"):
        imap.authenticate("PLAIN", lambda _: plain)
    assert imap.readline() == b"* BYE Too many failed logins.\r\n"
    imap.shutdown()
    imap, refusal = imap_login(bob, "127.0.0.5", bob.password)
    assert refusal == ""
    fetch_all(imap)  # the owner's session works as ever
    imap.logout()


def test_failures_over_smtp_and_imap_count_together(logins: Bubble) -> None:
    bob = logins.accounts["bob"]
    for _ in range(2):
        assert smtp_attempt(bob, "127.0.0.6", "guess-smtp")[0] == 535
    assert "[AUTHENTICATIONFAILED]" in imap_refused(bob, "127.0.0.6", "guess-imap")
    assert "[UNAVAILABLE]" in imap_blocked(bob, "127.0.0.6", "guess-imap")  # the 4th failure
    assert smtp_attempt(bob, "127.0.0.6", bob.password) == (421, BLOCKED_SMTP)


def test_failed_logins_and_blocks_are_logged_without_password_or_address(
    logins: Bubble,
) -> None:
    bob = logins.accounts["bob"]
    guesses = [f"canary-guess-{secrets.token_hex(6)}" for _ in range(BLOCK_AFTER)]
    for guess in guesses[:2]:
        smtp_attempt(bob, "127.0.0.7", guess)
    imap_refused(bob, "127.0.0.7", guesses[2])
    imap_blocked(bob, "127.0.0.7", guesses[3])
    log = logins.log_text("bob")
    failed = [line for line in log.splitlines() if "login failed client=" in line]
    assert sum(" smtp: " in line for line in failed) >= 2
    assert sum(" imap: " in line for line in failed) >= 2
    blocks = [line for line in log.splitlines() if "blocked for 3600 s after 4 failed" in line]
    assert blocks
    for secret in (*guesses, bob.password, "127.0.0.7", "127.0.0.2", bob.address):
        assert secret not in log


def moderate_cost(home: Path, address: str) -> bool:
    with sqlite3.connect(home / "gateway.db") as db:
        (blob,) = db.execute("SELECT sealed_seed FROM account WHERE address = ?",
                             (address,)).fetchone()
    _, opslimit, memlimit, _ = struct.unpack_from(">4sQQ16s", blob)
    argon2id = nacl.pwhash.argon2id
    return (opslimit, memlimit) == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)


def test_an_account_added_at_the_default_cost_logs_in_end_to_end(logins: Bubble) -> None:
    alice, bob = logins.accounts["alice"], logins.accounts["bob"]
    assert moderate_cost(alice.home, alice.address)
    assert not moderate_cost(bob.home, bob.address)  # the test fixtures' cheaper cost
    token = secrets.token_hex(8)
    code, _, smtp = smtp_auth(alice, "127.0.0.1", alice.password)
    assert code == 235
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = alice.address, bob.address, "moderate"
    msg.set_content(f"sealed under a moderate-cost key {token}")
    assert smtp.send_message(msg) == {}
    smtp.quit()
    imap, refusal = imap_login(alice, "127.0.0.1", alice.password)
    assert refusal == ""  # IMAP LOGIN too
    imap.logout()
    assert len(wait_for_messages(bob, token=token)) == 1
