"""SMTP submission policy, driven by real clients (smtplib, swaks) against gateway processes."""

from __future__ import annotations

import email
import email.policy
import secrets
import smtplib
import subprocess
from email.message import EmailMessage

import pytest

from tests.bubble_processes import Bubble
from tests.integration.test_end_to_end import submit, wait_for_messages

pytestmark = pytest.mark.integration


def plain_message(sender: str, to: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "test"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def test_swaks_auth_login_delivers(shared_bubble: Bubble) -> None:
    alice, carol = shared_bubble.accounts["alice"], shared_bubble.accounts["carol"]
    canary = "swaks-" + secrets.token_hex(6)
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{alice.smtp_port}", "--tls",
         "--tls-ca-path", str(alice.home / "tls" / "cert.pem"), "--tls-verify",
         "--auth", "LOGIN", "--auth-user", alice.address, "--auth-password", alice.password,
         "--from", alice.address, "--to", carol.address,
         "--header", "Subject: via swaks", "--body", f"sent with swaks {canary}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<~  250 2.0.0 Sealed for 1 recipient(s)" in result.stdout  # "~": over TLS
    assert len(wait_for_messages(carol, token=canary)) == 1


def test_auth_needs_tls_and_gives_up_after_three_failures(shared_bubble: Bubble) -> None:
    alice = shared_bubble.accounts["alice"]
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")  # AUTH is offered only after STARTTLS
        code, _ = smtp.docmd("MAIL", f"FROM:<{alice.address}>")
        assert code == 530
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.ehlo()
        smtp.user, smtp.password = alice.address, "wrong"
        # one AUTH PLAIN per attempt (smtplib.login would also try LOGIN after PLAIN)
        for _ in range(2):
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                smtp.auth("PLAIN", smtp.auth_plain)
            assert err.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.auth("PLAIN", smtp.auth_plain)
        assert err.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_header_from_must_be_the_account(shared_bubble: Bubble) -> None:
    alice, bob = shared_bubble.accounts["alice"], shared_bubble.accounts["bob"]
    msg = plain_message(bob.address, bob.address, "forged")
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        with pytest.raises(smtplib.SMTPDataError) as err:
            smtp.send_message(msg, from_addr=alice.address, to_addrs=[bob.address])
    assert err.value.smtp_code == 550 and err.value.smtp_error.startswith(b"5.7.1")


def test_bcc_recipient_gets_its_own_envelope(shared_bubble: Bubble) -> None:
    alice, bob, carol = (shared_bubble.accounts[u] for u in ("alice", "bob", "carol"))
    token = "bcc-" + secrets.token_hex(6)
    msg = plain_message(alice.address, bob.address, f"for bob, carol in bcc {token}",
                        Bcc=carol.address)
    assert submit(alice, msg) == {}  # smtplib sends RCPT for the Bcc address too
    for account in (bob, carol):
        mails = wait_for_messages(account, token=token)
        assert len(mails) == 1
        got = email.message_from_bytes(mails[0], policy=email.policy.default)
        assert got["Bcc"] is None
        assert carol.address.encode() not in mails[0].split(b"\r\n\r\n", 1)[0]


def test_smuggled_second_message_is_not_accepted(shared_bubble: Bubble) -> None:
    """A bare-LF '.' must not end DATA (SMTP smuggling); the smuggled MAIL stays body text."""
    alice, bob = shared_bubble.accounts["alice"], shared_bubble.accounts["bob"]
    token = "smuggle-" + secrets.token_hex(6)
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        smtp.mail(alice.address)
        smtp.rcpt(bob.address)
        code, _ = smtp.docmd("DATA")
        assert code == 354
        smtp.send(
            f"From: {alice.address}\r\nTo: {bob.address}\r\nSubject: {token}\r\n\r\nfirst\n.\n"
            f"MAIL FROM:<{alice.address}>\r\nRCPT TO:<{bob.address}>\r\nDATA\r\n"
            f"Subject: smuggled\r\n\r\nsecond\r\n.\r\n".encode()
        )
        code, reply = smtp.getreply()
        assert code in (250, 550, 554), reply
    if code == 250:
        mails = wait_for_messages(bob, token=token)
        assert len(mails) == 1
        assert not any(b"Subject: smuggled" in m.split(b"\r\n\r\n", 1)[0] for m in mails)
