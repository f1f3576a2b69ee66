"""What mail clients expect of submission: the EHLO extensions, implicit TLS (port 465
style) with smtplib.SMTP_SSL and swaks, and the sealed copy in Sent, over real sockets."""

from __future__ import annotations

import email
import email.policy
import secrets
import smtplib
import subprocess
from collections.abc import Iterator

import pytest

from tests.bubble_processes import Account, Bubble, files_containing, free_port
from tests.integration.test_end_to_end import imap_login, wait_for_messages

pytestmark = pytest.mark.integration


RATE_LIMIT = 2


@pytest.fixture(scope="module")
def clients_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """alice: implicit TLS on a second port, Sent copies (the default); bob: sent_copy off;
    carol: a submission limit of RATE_LIMIT messages per hour."""
    bubble = Bubble(tmp_path_factory.mktemp("clients"))
    try:
        bubble.init()
        port = free_port()
        bubble.add_account("alice", "alice-" + secrets.token_hex(6), settings={"smtps_port": port})
        bubble.services["alice"].ports.append(port)
        bubble.add_account("bob", "bob-" + secrets.token_hex(6))
        config = bubble.root / "bob.toml"
        config.write_text(config.read_text() + "sent_copy = false\n")
        bubble.add_account("carol", "carol-" + secrets.token_hex(6),
                           settings={"submission_limit": RATE_LIMIT})
        bubble.start_gateway("alice", "bob", "carol")
        yield bubble
    finally:
        bubble.kill_all()


def smtps_port(bubble: Bubble) -> int:
    return bubble.services["alice"].ports[-1]


def message(sender: Account, to: str, canary: str, **extra: str) -> bytes:
    lines = [f"From: {sender.address}", f"To: {to}", f"Subject: sent {canary}"]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + f"\r\n\r\nbody {canary}\r\n").encode()


def folder(account: Account, name: str) -> list[bytes]:
    imap = imap_login(account)
    try:
        assert imap.select(name)[0] == "OK"
        _, data = imap.uid("SEARCH", "ALL")
        bodies = []
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            assert b"\\Seen" in fetched[0][0]
            bodies.append(fetched[0][1])
        return bodies
    finally:
        imap.logout()


EXTENSIONS = ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes")


def test_ehlo_offers_what_clients_expect(clients_bubble: Bubble) -> None:
    alice = clients_bubble.accounts["alice"]
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        assert all(smtp.has_extn(name) for name in (*EXTENSIONS, "starttls"))
        smtp.starttls(context=alice.tls_context())
        smtp.ehlo()
        assert all(smtp.has_extn(name) for name in (*EXTENSIONS, "auth"))
        assert not smtp.has_extn("starttls")
        smtp.login(alice.address, alice.password)
        code, reply = smtp.mail(alice.address, ["SIZE=999999999999"])
        assert (code, reply[:5]) == (552, b"5.3.4")


def test_implicit_tls_submission_with_smtplib(clients_bubble: Bubble) -> None:
    alice, bob = clients_bubble.accounts["alice"], clients_bubble.accounts["bob"]
    canary = "smtps-" + secrets.token_hex(6)
    with smtplib.SMTP_SSL("127.0.0.1", smtps_port(clients_bubble), timeout=30,
                          context=alice.tls_context()) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        assert all(smtp.has_extn(name) for name in EXTENSIONS)
        smtp.login(alice.address, alice.password)
        raw = message(alice, bob.address, canary)
        assert smtp.sendmail(alice.address, [bob.address], raw) == {}
    assert len(wait_for_messages(bob, token=canary)) == 1


def test_implicit_tls_submission_with_swaks(clients_bubble: Bubble) -> None:
    alice, bob = clients_bubble.accounts["alice"], clients_bubble.accounts["bob"]
    canary = "swaks-tlsc-" + secrets.token_hex(6)
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{smtps_port(clients_bubble)}", "--tlsc",
         "--tls-ca-path", str(alice.home / "tls" / "cert.pem"), "--tls-verify",
         "--auth", "PLAIN", "--auth-user", alice.address, "--auth-password", alice.password,
         "--from", alice.address, "--to", bob.address,
         "--header", f"Subject: {canary}", "--body", f"over implicit TLS {canary}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<~  250 2.0.0 Sealed for 1 recipient(s)" in result.stdout
    assert len(wait_for_messages(bob, token=canary)) == 1


def test_a_sealed_copy_lands_in_sent_with_its_bcc(clients_bubble: Bubble) -> None:
    alice, bob = clients_bubble.accounts["alice"], clients_bubble.accounts["bob"]
    canary = "sent-copy-" + secrets.token_hex(6)
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        raw = message(alice, bob.address, canary, Bcc=alice.address)
        raw = b"Message-ID: <1@laptop.corp.example>\r\n" + raw
        smtp.sendmail(alice.address, [bob.address], raw)
    received = wait_for_messages(bob, token=canary)
    copies = [m for m in folder(alice, "Sent") if canary.encode() in m]
    assert len(received) == 1 and len(copies) == 1
    sent = email.message_from_bytes(copies[0], policy=email.policy.default)
    got = email.message_from_bytes(received[0], policy=email.policy.default)
    assert sent["Bcc"] == alice.address and got["Bcc"] is None
    assert sent["Message-ID"] == got["Message-ID"]  # the rewritten id: replies thread
    assert "laptop.corp.example" not in sent["Message-ID"]
    assert files_containing(clients_bubble.state_dirs, [canary.encode()]) == []


def test_sent_copy_off_keeps_none(clients_bubble: Bubble) -> None:
    alice, bob = clients_bubble.accounts["alice"], clients_bubble.accounts["bob"]
    canary = "no-copy-" + secrets.token_hex(6)
    with smtplib.SMTP("127.0.0.1", bob.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=bob.tls_context())
        smtp.login(bob.address, bob.password)
        smtp.sendmail(bob.address, [alice.address], message(bob, alice.address, canary))
    assert len(wait_for_messages(alice, token=canary)) == 1  # delivered, so DATA is done
    assert not any(canary.encode() in m for m in folder(bob, "Sent"))


def test_the_submission_limit_answers_451_4_7_1(clients_bubble: Bubble) -> None:
    carol, alice = clients_bubble.accounts["carol"], clients_bubble.accounts["alice"]
    canary = "rate-" + secrets.token_hex(6)
    with smtplib.SMTP("127.0.0.1", carol.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=carol.tls_context())
        smtp.login(carol.address, carol.password)
        for _ in range(RATE_LIMIT):
            assert smtp.sendmail(carol.address, [alice.address],
                                 message(carol, alice.address, canary)) == {}
        code, reply = smtp.mail(carol.address)
    assert code == 451 and reply.startswith(b"4.7.1 This account has sent 2 messages")
    assert len(wait_for_messages(alice, RATE_LIMIT, token=canary)) == RATE_LIMIT
