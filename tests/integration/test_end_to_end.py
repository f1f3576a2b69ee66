"""alice -> bob through separate sealgate processes, with real smtplib/imaplib clients."""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import secrets
import smtplib
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.bubble_processes import Account, Bubble, files_containing
from tests.integration.conftest import start_bubble

pytestmark = pytest.mark.integration

ATTACHMENT = bytes(range(256)) * 40  # binary, 10 KiB


def compose(sender: Account, to: str, canary: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender.address
    msg["To"] = to
    msg["Cc"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    msg["Message-ID"] = email.utils.make_msgid(domain="alice-laptop.corp.example")
    msg["X-Mailer"] = "Canary Mail 1.0"
    msg.set_content(f"Hello Bob,\n\nthe code word is {canary}.\n")
    msg.add_attachment(
        ATTACHMENT, maintype="application", subtype="octet-stream", filename="report.bin"
    )
    return msg


def submit(
    sender: Account, msg: EmailMessage, recipients: list[str] | None = None
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", sender.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=sender.tls_context())
        smtp.login(sender.address, sender.password)
        return smtp.send_message(msg, to_addrs=recipients)


def imap_login(account: Account) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", account.imap_port, timeout=30)
    imap.starttls(ssl_context=account.tls_context())
    imap.login(account.address, account.password)
    return imap


def fetch_all(imap: imaplib.IMAP4) -> list[bytes]:
    typ, data = imap.select("INBOX")
    assert typ == "OK"
    typ, data = imap.uid("SEARCH", "ALL")
    bodies = []
    for uid in data[0].split():
        typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        bodies.append(fetched[0][1])
    return bodies


def wait_for_messages(
    account: Account, count: int = 1, timeout: float = 20.0, token: str | None = None
) -> list[bytes]:
    """Log in (which unlocks the account) and poll INBOX until `count` messages are there
    (counting only those that contain `token`, when given); return those messages."""
    imap = imap_login(account)
    try:
        deadline = time.monotonic() + timeout
        while True:
            bodies = fetch_all(imap)
            if token is not None:
                bodies = [b for b in bodies if token.encode() in b]
            if len(bodies) >= count or time.monotonic() > deadline:
                imap.logout()
                return bodies
            time.sleep(0.2)
    finally:
        with contextlib.suppress(OSError):
            imap.shutdown()


def test_alice_to_bob_over_an_https_relay(tmp_path: Path) -> None:
    """The same exchange with a relay that serves HTTPS and a certificate the parts pin."""
    bubble = start_bubble(tmp_path, ("alice", "bob"), https=True)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        canary = "https-" + secrets.token_hex(6)
        assert submit(alice, compose(alice, bob.address, canary, "über TLS")) == {}
        assert len(wait_for_messages(bob, token=canary)) == 1
        assert "deposited" in bubble.log_text("alice")
    finally:
        bubble.kill_all()


def test_alice_to_bob_and_nothing_in_clear_at_rest(bubble: Bubble) -> None:
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    canary = "canary-" + secrets.token_hex(8)
    subject_token = "subj" + secrets.token_hex(6)
    subject = f"Grüße aus Zürich {subject_token} ✓"
    sent = compose(alice, bob.address, canary, subject)

    refused = submit(alice, sent)
    assert refused == {}

    bodies = wait_for_messages(bob, 1)
    assert len(bodies) == 1
    got = email.message_from_bytes(bodies[0], policy=email.policy.default)
    assert got["Subject"] == subject
    assert got["From"] == alice.address
    assert got["To"] == bob.address and got["Cc"] == bob.address
    assert got["Date"] == sent["Date"]
    assert canary in got.get_body(("plain",)).get_content()
    attachments = list(got.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["report.bin"]
    assert attachments[0].get_content() == ATTACHMENT
    # metadata was stripped, the Message-ID host rewritten
    assert got["X-Mailer"] is None
    assert "alice-laptop" not in got["Message-ID"]

    codes = bubble.stop_all()
    assert set(codes.values()) == {0}, codes

    encoded_subject = sent.as_bytes().split(b"Subject: ", 1)[1].split(b"\n", 1)[0].strip()
    needles = [canary.encode(), subject_token.encode(), encoded_subject, subject.encode()]
    assert files_containing(bubble.state_dirs, needles) == []
    addresses = [alice.address.encode(), bob.address.encode(), b"alice@", b"bob@"]
    assert files_containing([bubble.relay_home], addresses) == []
    # no process logs an address either: not the relay, and not the gateways
    assert files_containing([bubble.root / "logs"], addresses) == []


def test_wrong_password_and_unknown_recipient(bubble: Bubble) -> None:
    alice = bubble.accounts["alice"]
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.login(alice.address, "not the password")
        assert err.value.smtp_code == 535
        assert err.value.smtp_error.startswith(b"5.7.8")
        smtp.login(alice.address, alice.password)
        smtp.mail(alice.address)
        code, reply = smtp.rcpt("nobody@test.bubble")
        assert code == 550 and reply.startswith(b"5.1.1")
        code, reply = smtp.rcpt("someone@outside.example")
        assert code == 550 and reply.startswith(b"5.7.1")
        smtp.rset()
        code, reply = smtp.mail("bob@test.bubble")
        assert code == 553

    imap = imaplib.IMAP4("127.0.0.1", alice.imap_port, timeout=30)
    imap.starttls(ssl_context=alice.tls_context())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(alice.address, "not the password")
    imap.logout()
    assert "Traceback" not in bubble.log_text("alice")


def test_relay_down_then_back_delivers(bubble: Bubble) -> None:
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    bubble.stop_relay()
    canary = "relaydown-" + secrets.token_hex(6)
    assert submit(alice, compose(alice, bob.address, canary, "while the relay is down")) == {}
    time.sleep(1.5)  # the delivery worker fails at least once
    bubble.start_relay()
    bodies = wait_for_messages(bob, 1, timeout=30)
    assert len(bodies) == 1 and canary.encode() in bodies[0]


def test_gateway_killed_after_250_delivers_exactly_once(bubble: Bubble) -> None:
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    bubble.stop_relay()
    canary = "restart-" + secrets.token_hex(6)
    assert submit(alice, compose(alice, bob.address, canary, "across a restart")) == {}
    bubble.services["alice"].kill()  # SIGKILL: no clean shutdown
    bubble.start_relay()
    bubble.start_gateway("alice")
    bodies = wait_for_messages(bob, 1, timeout=30)
    time.sleep(2)  # a duplicate would arrive within a few polls
    bodies = wait_for_messages(bob, 1, timeout=1)
    assert len(bodies) == 1 and canary.encode() in bodies[0]


def test_tampered_envelope_becomes_a_notice(bubble: Bubble) -> None:
    """An envelope altered at rest in the outbox is refused by bob's gateway and reported."""
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    bubble.stop_relay()
    canary = "tampered-" + secrets.token_hex(6)
    assert submit(alice, compose(alice, bob.address, canary, "altered on the way")) == {}
    assert bubble.stop_gateway("alice") == 0
    db = sqlite3.connect(alice.home / "gateway.db")
    ((row_id, sealed),) = db.execute("SELECT id, envelope FROM outbox_item").fetchall()
    altered = bytearray(sealed)
    altered[len(altered) // 2] ^= 0x01  # one bit inside the ciphertext
    db.execute("UPDATE outbox_item SET envelope = ? WHERE id = ?", (bytes(altered), row_id))
    db.commit()
    db.close()
    bubble.start_relay()
    bubble.start_gateway("alice")

    bodies = wait_for_messages(bob, 1, timeout=30)
    assert len(bodies) == 1
    notice = email.message_from_bytes(bodies[0], policy=email.policy.default)
    assert notice["Subject"] == "A sealed message could not be opened"
    assert notice["From"].addresses[0].addr_spec == "postmaster@test.bubble"
    assert canary.encode() not in bodies[0]
    log = bubble.log_text("bob")
    assert "rejected: cannot-open" in log and canary not in log and "Traceback" not in log
