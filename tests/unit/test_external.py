"""Mail from outside the bubble (`bridge.external`): the external sealed sender's proof,
and the header rules that keep an outside sender from passing for a member."""

from __future__ import annotations

import pytest

from bridge.envelope import new_envelope_id, open_envelope, seal
from bridge.errors import CannotOpen
from bridge.external import (
    InboundIdentity,
    check_external_header,
    is_external,
    open_external,
    verify_sender,
)
from bridge.headers import parse_header
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.sender import SenderRefused

DOMAIN = "corp.bubble"
ROOT = RootKey.generate()
CREDENTIAL = GatewayCredential.issue(ROOT)
IDENTITY = InboundIdentity(CREDENTIAL.seed, CREDENTIAL.certificate)
BOB = AccountKeys.generate()


def sealed(
    message: bytes, identity: InboundIdentity = IDENTITY, reverse_path: str = "x@ext.example",
    signer: AccountKeys | None = None,
) -> bytes:
    return seal(message, sender=identity.sender(reverse_path),
                sender_keys=signer or identity.keys, recipient=BOB.public,
                envelope_id=new_envelope_id())


def test_an_external_envelope_opens_marked_as_external() -> None:
    message = b"From: Carol <carol@ext.example>\r\nSubject: hi\r\n\r\nbody\r\n"
    opened = open_envelope(sealed(message), BOB)
    assert is_external(opened.sender) and not is_external("alice@corp.bubble")
    stored = open_external(opened, (ROOT.public,), DOMAIN)
    first, _, rest = stored.partition(b"\r\n")
    assert first.startswith(b"Sealgate-Origin: external; received from outside the bubble")
    assert CREDENTIAL.verify_key.hex()[:16].encode() in first
    assert rest == message
    assert verify_sender(opened, (ROOT.public,)).reverse_path == "x@ext.example"


def test_a_null_reverse_path_is_an_external_sender_too() -> None:
    opened = open_envelope(sealed(b"From: mailer-daemon@ext.example\r\n\r\nb\r\n",
                                  reverse_path=""), BOB)
    assert verify_sender(opened, (ROOT.public,)).reverse_path == ""


def test_a_gateway_of_another_root_cannot_seal_external_mail() -> None:
    stranger = GatewayCredential.issue(RootKey.generate())
    opened = open_envelope(sealed(b"From: c@ext.example\r\n\r\nb\r\n",
                                  InboundIdentity(stranger.seed, stranger.certificate)), BOB)
    with pytest.raises(CannotOpen):
        open_external(opened, (ROOT.public,), DOMAIN)


def test_a_certificate_copied_onto_another_key_does_not_verify() -> None:
    """A valid certificate with a key the gateway did not delegate (a member's own key)."""
    member = AccountKeys.generate()
    opened = open_envelope(sealed(b"From: c@ext.example\r\n\r\nb\r\n", signer=member), BOB)
    with pytest.raises(CannotOpen):
        verify_sender(opened, (ROOT.public,))
    forged = InboundIdentity(GatewayCredential.issue(ROOT).seed, CREDENTIAL.certificate)
    opened = open_envelope(sealed(b"From: c@ext.example\r\n\r\nb\r\n", forged), BOB)
    with pytest.raises(CannotOpen):
        verify_sender(opened, (ROOT.public,))


@pytest.mark.parametrize("sender", ["external:", "external:!!!:x@y", "external:AAAA:x@y"])
def test_malformed_proofs_cannot_open(sender: str) -> None:
    envelope = seal(b"From: c@ext.example\r\n\r\nb\r\n", sender=sender, sender_keys=IDENTITY.keys,
                    recipient=BOB.public)
    with pytest.raises(CannotOpen):
        verify_sender(open_envelope(envelope, BOB), (ROOT.public,))


def test_a_reverse_path_over_the_sender_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        IDENTITY.sender("a" * 900 + "@ext.example")


CLAIMS = [
    pytest.param(f"From: alice@{DOMAIN}\r\n", id="from"),
    pytest.param(f"From: ALICE@{DOMAIN.upper()}\r\n", id="from-upper-case"),
    pytest.param(f"From: c@ext.example\r\nSender: alice@{DOMAIN}\r\n", id="sender"),
    pytest.param(f'From: "alice@{DOMAIN}" <c@ext.example>\r\n', id="display-name"),
    pytest.param(f"From: =?utf-8?q?alice=40{DOMAIN}?= <c@ext.example>\r\n", id="encoded"),
    pytest.param(f'From: "alice\uff20{DOMAIN}" <c@ext.example>\r\n', id="lookalike-at"),
    pytest.param(f"From: c@ext.example (alice@{DOMAIN})\r\n", id="comment"),
    pytest.param(f"From: c@ext.example\r\nFrom: alice@{DOMAIN}\r\n", id="two-froms"),
]


@pytest.mark.parametrize("headers", CLAIMS)
def test_an_outside_sender_cannot_claim_a_bubble_author(headers: str) -> None:
    header = parse_header(f"{headers}Subject: s\r\n\r\nbody\r\n".encode())
    with pytest.raises(SenderRefused):
        check_external_header(header, DOMAIN)


@pytest.mark.parametrize("headers", CLAIMS)
def test_the_receiving_gateway_refuses_the_claim_too(headers: str) -> None:
    """Even sealed by a genuine inbound gateway (one that skipped its own check)."""
    opened = open_envelope(sealed(f"{headers}Subject: s\r\n\r\nbody\r\n".encode()), BOB)
    with pytest.raises(SenderRefused):
        open_external(opened, (ROOT.public,), DOMAIN)


@pytest.mark.parametrize("headers", [
    "From: Carol <carol@ext.example>\r\nSender: list-bounces@lists.example\r\n",
    f"From: carol@{DOMAIN}.example.org\r\n",  # a longer name, not the bubble's domain
    f"From: carol@ext.example\r\nReply-To: alice@{DOMAIN}\r\nTo: bob@{DOMAIN}\r\n",
    '"carol@ext.example" <carol@ext.example>',  # display names with outside addresses are fine
])
def test_ordinary_outside_mail_passes(headers: str) -> None:
    if not headers.endswith("\r\n"):
        headers = f"From: {headers}\r\n"
    check_external_header(parse_header(f"{headers}Subject: s\r\n\r\nb\r\n".encode()), DOMAIN)


def test_malformed_outside_mail_is_refused_like_member_mail() -> None:
    header = parse_header(b"From : c@ext.example\r\nSubject: s\r\n\r\nb\r\n")
    with pytest.raises(SenderRefused, match="white space"):
        check_external_header(header, DOMAIN)
