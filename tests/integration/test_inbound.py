"""Mail from outside into the bubble: smtplib as the MX against alice's gateway's
`--inbound` listener, read over imaplib on alice's and on bob's gateway (separate processes).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import smtplib
import ssl
from collections.abc import Iterator

import pytest

from bridge.envelope import new_envelope_id, seal
from bridge.external import InboundIdentity
from bridge.keys import GatewayCredential, RootKey
from bridge.relay.client import RelayClient
from gateway.homes import Membership, gateway_database_url
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from tests.bubble_processes import DOMAIN, Bubble, files_containing, free_port
from tests.integration.test_end_to_end import wait_for_messages

pytestmark = pytest.mark.integration

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
OUTSIDE = "carol@partner.example"
MAX_MESSAGE = 200_000


@pytest.fixture(scope="module")
def inbound_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """alice's gateway listens for the MX; bob's gateway is another process without one."""
    bubble = Bubble(tmp_path_factory.mktemp("inbound"))
    try:
        bubble.init()
        port = free_port()
        bubble.add_account("alice", "alice-" + secrets.token_hex(6), settings={
            "inbound_port": port, "max_message_bytes": MAX_MESSAGE,
        })
        bubble.services["alice"].ports.append(port)
        config = bubble.root / "alice.toml"
        config.write_text(config.read_text() + 'inbound_authserv_id = "mx.test"\n')
        bubble.add_account("bob", "bob-" + secrets.token_hex(6))
        bubble.start_gateway("alice")
        bubble.start_gateway("bob")
        yield bubble
    finally:
        bubble.kill_all()


def inbound_port(bubble: Bubble) -> int:
    return bubble.services["alice"].ports[-1]


def outside_message(canary: str, *, sender: str = OUTSIDE, extra: str = "") -> bytes:
    return (
        "Received: from mail.partner.example (mail.partner.example [198.51.100.7])\r\n"
        "\tby mx.test (Postfix) with ESMTPS id 4Xyz; Tue, 1 Dec 2026 09:00:00 +0000\r\n"
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=partner.example\r\n"
        "Authentication-Results: partner.example; dkim=pass header.d=partner.example\r\n"
        f"From: Carol <{sender}>\r\nTo: {ALICE}, {BOB}\r\nSubject: from outside\r\n"
        "Message-ID: <123@laptop.partner.example>\r\nX-Mailer: Outlook 16\r\n"
        f"{extra}\r\nthe canary is {canary}\r\n"
    ).encode()


def mx(bubble: Bubble) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", inbound_port(bubble), timeout=30)
    smtp.ehlo("mx.test")
    return smtp


def test_mail_from_the_mx_reaches_members_of_every_gateway(inbound_bubble: Bubble) -> None:
    alice, bob = inbound_bubble.accounts["alice"], inbound_bubble.accounts["bob"]
    canary = "inbound-" + secrets.token_hex(6)
    with mx(inbound_bubble) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=alice.home / "tls" / "cert.pem"))
        smtp.ehlo("mx.test")
        assert not smtp.has_extn("auth")
        refused = smtp.sendmail(OUTSIDE, [ALICE, BOB], outside_message(canary))
    assert refused == {}
    for account in (alice, bob):
        mails = wait_for_messages(account, token=canary)
        assert len(mails) == 1
        head = mails[0].split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"Sealgate-Origin: external; received from outside the bubble")
        got = email.message_from_bytes(mails[0], policy=email.policy.default)
        assert got["From"].addresses[0].addr_spec == OUTSIDE
        assert got.get_all("Authentication-Results") == [
            "mx.test; spf=pass smtp.mailfrom=partner.example"
        ]
        for gone in (b"Received:", b"X-Mailer", b"laptop.partner.example", b"198.51.100.7"):
            assert gone not in head
    assert files_containing(inbound_bubble.state_dirs, [canary.encode()]) == []
    log = inbound_bubble.log_text("alice")
    assert OUTSIDE not in log and ALICE not in log and "Traceback" not in log


def test_ehlo_offers_starttls_and_the_extensions_but_no_auth(inbound_bubble: Bubble) -> None:
    with mx(inbound_bubble) as smtp:
        for name in ("starttls", "size", "8bitmime", "smtputf8", "pipelining",
                     "enhancedstatuscodes"):
            assert smtp.has_extn(name), name
        assert smtp.esmtp_features["size"] == str(MAX_MESSAGE)
        assert not smtp.has_extn("auth")
        code, reply = smtp.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
        assert (code, reply[:5]) == (502, b"5.5.1")


@pytest.mark.parametrize(("recipient", "code", "enhanced"), [
    (f"nobody@{DOMAIN}", 550, b"5.1.1"),
    ("someone@elsewhere.example", 550, b"5.7.1"),
])
def test_recipients_outside_the_directory_are_refused(
    inbound_bubble: Bubble, recipient: str, code: int, enhanced: bytes
) -> None:
    with mx(inbound_bubble) as smtp:
        smtp.mail(OUTSIDE)
        got, reply = smtp.rcpt(recipient)
    assert (got, reply[:5]) == (code, enhanced)


def test_over_size_is_552_5_3_4_declared_or_not(inbound_bubble: Bubble) -> None:
    with mx(inbound_bubble) as smtp:
        code, reply = smtp.mail(OUTSIDE, [f"SIZE={MAX_MESSAGE + 1}"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        smtp.rset()
        assert smtp.mail(OUTSIDE)[0] == 250  # no SIZE declared: the limit applies to DATA
        assert smtp.rcpt(ALICE)[0] == 250
        code, reply = smtp.data(outside_message("big\r\n" + ("y" * 998 + "\r\n") * 250))
    assert (code, reply[:5]) == (552, b"5.3.4")


@pytest.mark.parametrize("from_line", [
    f"From: {BOB}\r\n",
    f'From: "{BOB}" <{OUTSIDE}>\r\n',
    f"From: {OUTSIDE}\r\nSender: {BOB}\r\n",
])
def test_an_outside_sender_claiming_a_member_is_refused(
    inbound_bubble: Bubble, from_line: str
) -> None:
    message = f"{from_line}To: {ALICE}\r\nSubject: I am bob\r\n\r\ntrust me\r\n".encode()
    with mx(inbound_bubble) as smtp, pytest.raises(smtplib.SMTPDataError) as err:
        smtp.sendmail(OUTSIDE, [ALICE], message)
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1 Mail from outside the bubble must not")


def test_bare_lf_dot_does_not_end_data_on_the_inbound_listener(inbound_bubble: Bubble) -> None:
    """SMTP smuggling (bare LF and `\\n.\\r\\n`): the smuggled MAIL stays body text."""
    alice = inbound_bubble.accounts["alice"]
    token = "smuggle-in-" + secrets.token_hex(6)
    with mx(inbound_bubble) as smtp:
        smtp.mail(OUTSIDE)
        smtp.rcpt(ALICE)
        code, _ = smtp.docmd("DATA")
        assert code == 354
        smtp.send(
            f"From: {OUTSIDE}\r\nTo: {ALICE}\r\nSubject: {token}\r\n\r\nfirst\n.\n"
            f"MAIL FROM:<{OUTSIDE}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n"
            f"Subject: smuggled\r\n\r\nsecond\n.\r\nthird\r\n.\r\n".encode()
        )
        code, reply = smtp.getreply()
        assert code == 250, reply
        code, _ = smtp.noop()  # one reply only: nothing smuggled was taken as a command
        assert code == 250
    mails = wait_for_messages(alice, token=token)
    assert len(mails) == 1
    assert b"Subject: smuggled" in mails[0].split(b"\r\n\r\n", 1)[1]
    assert b"third" in mails[0]


def test_relay_down_mail_is_queued_and_delivered_later(inbound_bubble: Bubble) -> None:
    bob = inbound_bubble.accounts["bob"]
    canary = "queued-" + secrets.token_hex(6)
    inbound_bubble.stop_relay()
    try:
        with mx(inbound_bubble) as smtp:
            assert smtp.sendmail(OUTSIDE, [BOB], outside_message(canary)) == {}
    finally:
        inbound_bubble.start_relay()
    assert len(wait_for_messages(bob, token=canary, timeout=30)) == 1


def deposit_for_bob(bubble: Bubble, identity: InboundIdentity, message: bytes) -> None:
    """Seal `message` as an inbound gateway would (its policy bypassed), deposit it for bob."""
    bob_row = AccountStore(open_engine(gateway_database_url(bubble.accounts["bob"].home))).get(BOB)
    assert bob_row is not None
    envelope = seal(message, sender=identity.sender(OUTSIDE), sender_keys=identity.keys,
                    recipient=bob_row.public, envelope_id=new_envelope_id())

    async def deposit() -> None:
        async with RelayClient(bubble.relay_url) as relay:
            await relay.deposit(envelope, Membership.load(bubble.accounts["alice"].home).credential)

    asyncio.run(deposit())


def test_reception_refuses_external_mail_that_claims_a_member(inbound_bubble: Bubble) -> None:
    """Sealed with alice's gateway's genuine inbound identity but past its inbound check."""
    bob = inbound_bubble.accounts["bob"]
    credential = Membership.load(inbound_bubble.accounts["alice"].home).credential
    canary = "claims-alice-" + secrets.token_hex(6)
    deposit_for_bob(inbound_bubble, InboundIdentity(credential.seed, credential.certificate),
                    f"From: {ALICE}\r\nSubject: s\r\n\r\n{canary}\r\n".encode())
    notices = wait_for_messages(bob, token="false sender", timeout=30)
    assert len(notices) == 1
    text = email.message_from_bytes(notices[0], policy=email.policy.default).get_content()
    assert "someone outside the bubble" in text and ALICE in text
    assert not any(canary.encode() in m for m in wait_for_messages(bob, 0))


def test_reception_refuses_external_mail_from_an_uncertified_gateway(
    inbound_bubble: Bubble,
) -> None:
    bob = inbound_bubble.accounts["bob"]
    stranger = GatewayCredential.issue(RootKey.generate())
    canary = "stranger-" + secrets.token_hex(6)
    deposit_for_bob(inbound_bubble, InboundIdentity(stranger.seed, stranger.certificate),
                    f"From: {OUTSIDE}\r\nSubject: s\r\n\r\n{canary}\r\n".encode())
    assert len(wait_for_messages(bob, token="could not be opened", timeout=30)) >= 1
    assert not any(canary.encode() in m for m in wait_for_messages(bob, 0))
