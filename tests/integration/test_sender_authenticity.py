"""No member can make mail appear to come from another: submission refuses every forged
header (smtplib against alice's gateway), and bob's gateway replaces a forged message that
alice seals herself with `bridge.envelope.seal` by a notice naming her (imaplib on bob's)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.envelope import new_envelope_id, seal
from bridge.relay.client import RelayClient
from gateway.homes import Membership, gateway_database_url
from gateway.keyring import KeyRing
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from tests.bubble_processes import DOMAIN, Account, Bubble
from tests.integration.test_end_to_end import wait_for_messages

pytestmark = pytest.mark.integration

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"

# (header lines, what the 550 5.7.1 reply says, the address a recipient would have seen)
FORGERIES = [
    pytest.param(f"From : {BOB}\r\nFrom: {ALICE}\r\n", "white space", BOB, id="space-before-colon"),
    pytest.param(f"From: {ALICE}\r\nSender: {BOB}\r\n", "Sender address", BOB, id="sender"),
    pytest.param(f'From: "{BOB}" <{ALICE}>\r\n', "display name", BOB, id="display-name"),
    pytest.param(f"From: =?utf-8?q?bob=40{DOMAIN}?= <{ALICE}>\r\n", "display name", BOB,
                 id="encoded-display-name"),
    pytest.param(f'From: "bob\uff20{DOMAIN}" <{ALICE}>\r\n', "display name", BOB,
                 id="lookalike-at"),
    pytest.param(f"From: {ALICE} ({BOB})\r\n", "display name", BOB, id="comment"),
    pytest.param(f"From: {BOB}\r\n", "From address", BOB, id="other-from"),
    pytest.param(f"From: {ALICE}\r\nFrom: {BOB}\r\n", "more than one From", BOB, id="two-froms"),
    pytest.param(f"From: {ALICE}, {BOB}\r\n", "exactly one address", BOB, id="two-addresses"),
    pytest.param(f"From: {ALICE}\r\nSubject: a\x00b\r\n", "control characters", None, id="nul"),
    pytest.param(f"From: {ALICE}\r\nSubject: one\r\nSubject: two\r\n", "more than one Subject",
                 None, id="two-subjects"),
    pytest.param(f'From: {ALICE}\r\nReply-To: "{BOB}" <x@{DOMAIN}>\r\n', "Reply-To display",
                 BOB, id="reply-to-display-name"),
]


def raw_message(headers: str, canary: str) -> bytes:
    subject = "" if "Subject:" in headers else "Subject: s\r\n"
    return f"{headers}{subject}To: {BOB}\r\n\r\nthe canary is {canary}\r\n".encode()


@pytest.mark.parametrize(("headers", "why", "claimed"), FORGERIES)
def test_submission_refuses_a_forged_sender(
    shared_bubble: Bubble, headers: str, why: str, claimed: str | None
) -> None:
    alice = shared_bubble.accounts["alice"]
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        with pytest.raises(smtplib.SMTPDataError) as err:
            smtp.sendmail(alice.address, [BOB], raw_message(headers, "x"))
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1 ")
    assert why.encode() in err.value.smtp_error


def test_submission_still_accepts_the_account_with_its_own_name(shared_bubble: Bubble) -> None:
    alice, bob = shared_bubble.accounts["alice"], shared_bubble.accounts["bob"]
    canary = "own-name-" + secrets.token_hex(6)
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        smtp.sendmail(alice.address, [BOB], raw_message(
            f'From: "Alice ({ALICE})" <{ALICE}>\r\nSender: {ALICE}\r\n', canary))
    assert len(wait_for_messages(bob, token=canary)) == 1


def deposit_sealed(bubble: Bubble, sender: Account, to: Account, messages: list[bytes]) -> None:
    """Seal each message as a member can with their own keys (their gateway's policy
    bypassed) and deposit it for `to` on the relay with the sender gateway's credential."""
    sender_engine = open_engine(gateway_database_url(sender.home))
    to_engine = open_engine(gateway_database_url(to.home))
    try:
        sender_keys = KeyRing(AccountStore(sender_engine)).unlock(sender.address, sender.password)
        to_row = AccountStore(to_engine).get(to.address)
    finally:
        sender_engine.dispose()
        to_engine.dispose()
    assert to_row is not None  # the recipient's public keys, as the directory gives them
    envelopes = [
        seal(m, sender=sender.address, sender_keys=sender_keys, recipient=to_row.public,
             envelope_id=new_envelope_id())
        for m in messages
    ]

    async def deposit() -> None:
        async with RelayClient(bubble.relay_url) as relay:
            for envelope in envelopes:
                await relay.deposit(envelope, Membership.load(sender.home).credential)

    asyncio.run(deposit())


def test_reception_replaces_each_forged_sender_by_a_notice(shared_bubble: Bubble) -> None:
    alice, bob = shared_bubble.accounts["alice"], shared_bubble.accounts["bob"]
    canaries = {f"forged-{p.id}-{secrets.token_hex(4)}": p.values for p in FORGERIES}
    honest = "honest-" + secrets.token_hex(6)
    deposit_sealed(shared_bubble, alice, bob, [
        *(raw_message(str(values[0]), canary) for canary, values in canaries.items()),
        raw_message(f"From: Alice <{ALICE}>\r\n", honest),
    ])

    assert len(wait_for_messages(bob, token=honest, timeout=30)) == 1
    notices = wait_for_messages(bob, len(FORGERIES), token="false sender", timeout=30)
    assert len(notices) == len(FORGERIES)
    inbox = wait_for_messages(bob, 0)
    for canary in canaries:
        assert not any(canary.encode() in m for m in inbox), canary
    for body in notices:
        notice = email.message_from_bytes(body, policy=email.policy.default)
        assert notice["Subject"] == "A message with a false sender was stopped"
        assert notice["From"].addresses[0].addr_spec == f"postmaster@{DOMAIN}"
        assert ALICE in notice.get_content()
    claimed = [values for values in canaries.values() if values[2] == BOB]
    texts = [
        email.message_from_bytes(b, policy=email.policy.default).get_content().replace("\r\n", "\n")
        for b in notices
    ]
    assert sum(f"claimed to come from\n\n  {BOB}" in t for t in texts) == len(claimed)
    log = shared_bubble.log_text("bob")
    assert log.count("rejected: header-sender") == len(FORGERIES)
    assert BOB not in log and ALICE not in log and "Traceback" not in log


@pytest.fixture(scope="module")
def strict_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """alice's gateway with small header limits set in its TOML config file."""
    bubble = Bubble(tmp_path_factory.mktemp("strict"))
    try:
        bubble.init()
        for user in ("alice", "bob"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}")
        config: Path = bubble.root / "alice.toml"
        config.write_text(config.read_text() + "max_header_block = 2048\nmax_address_field = 64\n")
        bubble.start_gateway("alice")
        yield bubble
    finally:
        bubble.kill_all()


def send(account: Account, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", account.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=account.tls_context())
        smtp.login(account.address, account.password)
        try:
            smtp.sendmail(account.address, [BOB], raw)
        except smtplib.SMTPDataError as err:
            return err.smtp_code, err.smtp_error
    return 250, b""


def test_header_limits_are_settings(strict_bubble: Bubble) -> None:
    alice = strict_bubble.accounts["alice"]
    filler = "X-Filler: " + "a" * 88 + "\r\n"  # 100 bytes
    base = f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: s\r\n"
    fits = base + filler * ((2048 - len(base)) // 100)
    assert send(alice, (fits + "\r\nbody\r\n").encode())[0] == 250
    code, reply = send(alice, (fits + filler + "\r\nbody\r\n").encode())
    assert code == 552 and reply.startswith(b"5.3.4")
    name = "A" * (64 - len(f" <{ALICE}>"))
    assert send(alice, f"From: {name} <{ALICE}>\r\n\r\nbody\r\n".encode())[0] == 250
    code, reply = send(alice, f"From: {name}A <{ALICE}>\r\n\r\nbody\r\n".encode())
    assert code == 550 and b"From field must be one valid address" in reply
