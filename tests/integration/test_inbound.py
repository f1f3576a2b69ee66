"""Mail from outside into the bubble: smtplib, and a real Postfix, as the MX of alice's
gateway's `--inbound` listener, read over imaplib on alice's and on bob's gateway
(separate processes).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import secrets
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.envelope import new_envelope_id, seal
from bridge.external import InboundIdentity
from bridge.keys import GatewayCredential, RootKey
from bridge.relay.client import RelayClient
from gateway.homes import Membership, gateway_database_url
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from tests.bubble_processes import DOMAIN, Bubble, files_containing, free_port, wait_for_port
from tests.integration.test_end_to_end import wait_for_messages

pytestmark = pytest.mark.integration

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
OUTSIDE = "carol@partner.example"
MAX_MESSAGE = 200_000
MAX_TRANSACTION = 300_000  # message size x recipients


@pytest.fixture(scope="module")
def inbound_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """alice's gateway listens for the MX; bob's gateway is another process without one."""
    bubble = Bubble(tmp_path_factory.mktemp("inbound"))
    try:
        bubble.init()
        port = free_port()
        bubble.add_account("alice", "alice-" + secrets.token_hex(6), settings={
            "inbound_port": port, "max_message_bytes": MAX_MESSAGE,
            "max_transaction_bytes": MAX_TRANSACTION,
        })
        bubble.services["alice"].ports.append(port)
        config = bubble.root / "alice.toml"
        config.write_text(config.read_text() + 'inbound_authserv_id = "mx.test"\n')
        bubble.add_account("bob", "bob-" + secrets.token_hex(6))
        bubble.start_gateway("alice", "bob")
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
        "Sealgate-Origin: a bubble member, honest\r\n"
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
        assert len(got.get_all("Sealgate-Origin")) == 1
        for gone in (b"Received:", b"X-Mailer", b"laptop.partner.example", b"198.51.100.7",
                     b"honest"):
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


def test_size_times_recipients_over_the_limit_is_552_5_3_4(inbound_bubble: Bubble) -> None:
    big = outside_message("wide\r\n" + ("z" * 998 + "\r\n") * 160)  # ~160 KB
    with mx(inbound_bubble) as smtp:
        # Without a declared SIZE the listener learns the size at DATA...
        assert smtp.mail(OUTSIDE)[0] == 250
        assert smtp.rcpt(ALICE)[0] == 250 and smtp.rcpt(BOB)[0] == 250
        code, reply = smtp.data(big)
        assert (code, reply[:5]) == (552, b"5.3.4")
        # ...and with one (smtplib declares it) at RCPT: the second recipient is refused.
        refused = smtp.sendmail(OUTSIDE, [ALICE, BOB], big)
        assert list(refused) == [BOB] and refused[BOB][0] == 552


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


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test
mydestination =
relay_domains = {domain}
transport_maps = inline:{{ {domain}=smtp:[127.0.0.1]:{inbound} }}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
"""
# master.cf: the daemons a relay-only Postfix needs, none chrooted; smtpd on a loopback port.
SERVICES = """\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


@dataclass
class Postfix:
    root: Path
    port: int

    @property
    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while self.log.count(needle) < count:
            assert time.monotonic() < deadline, f"Postfix never logged {needle!r}:\n{self.log}"
            time.sleep(0.2)
        return self.log


@pytest.fixture(scope="module")
def postfix_mx(inbound_bubble: Bubble) -> Iterator[Postfix]:
    """A real Postfix (Debian's package) from its own config_directory, relaying the
    bubble's domain to alice's gateway's inbound listener over STARTTLS."""
    if shutil.which("postfix") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's postfix (scripts/system-packages) and root")
    # Under /tmp, not the test's 0700 directory: Postfix's daemons run as user postfix.
    root = Path(tempfile.mkdtemp(prefix="sealgate-mx-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the daemons (user postfix) must reach their queue
    for name in ("conf", "data", "queue"):
        (root / name).mkdir()  # postfix-script makes the queue's own directories
    shutil.chown(root / "data", "postfix")
    port = free_port()
    (root / "conf" / "main.cf").write_text(
        MAIN_CF.format(root=root, domain=DOMAIN, inbound=inbound_port(inbound_bubble))
    )
    (root / "conf" / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - - smtpd\n" + SERVICES)
    control = ["postfix", "-c", str(root / "conf")]
    started = subprocess.run([*control, "start"], capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started.stderr + (root / "maillog").read_text()
        wait_for_port(port)
        yield Postfix(root, port)
    finally:
        subprocess.run([*control, "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def swaks_to(postfix: Postfix, recipient: str, canary: str, *headers: str) -> None:
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{postfix.port}", "--from", OUTSIDE, "--to", recipient,
         "--helo", "mail.partner.example",
         *(arg for header in headers for arg in ("--header", header)),
         "--header", "Subject: through Postfix", "--body", f"the canary is {canary}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_postfix_as_the_mx_hands_mail_to_the_inbound_listener(
    inbound_bubble: Bubble, postfix_mx: Postfix
) -> None:
    """swaks -> Postfix (queue, then its smtp client over STARTTLS) -> inbound -> bob's IMAP.
    The Authentication-Results line stands for the one a milter on the MX would add."""
    bob = inbound_bubble.accounts["bob"]
    canary = "via-postfix-" + secrets.token_hex(6)
    swaks_to(postfix_mx, BOB, canary,
             "Authentication-Results: mx.test; spf=pass smtp.mailfrom=partner.example")
    log = postfix_mx.wait_for_log("status=sent (250 2.0.0 Sealed for 1 recipient(s)")
    assert "TLS connection established to 127.0.0.1" in log
    mails = wait_for_messages(bob, token=canary, timeout=30)
    assert len(mails) == 1
    got = email.message_from_bytes(mails[0], policy=email.policy.default)
    assert got["Sealgate-Origin"].startswith("external;")
    assert got["Authentication-Results"] == "mx.test; spf=pass smtp.mailfrom=partner.example"
    assert got["Received"] is None and b"mx.test (Postfix)" not in mails[0]
    assert files_containing(inbound_bubble.state_dirs, [canary.encode()]) == []


def test_postfix_bounces_what_the_inbound_listener_refuses(
    inbound_bubble: Bubble, postfix_mx: Postfix
) -> None:
    swaks_to(postfix_mx, f"nobody@{DOMAIN}", "unknown-" + secrets.token_hex(4))
    swaks_to(postfix_mx, BOB, "claims-bob-" + secrets.token_hex(4), f"From: {BOB}")
    postfix_mx.wait_for_log("said: 550 5.1.1 No such recipient in this bubble")
    log = postfix_mx.wait_for_log("said: 550 5.7.1 Mail from outside the bubble must not")
    assert log.count("status=bounced") >= 2
