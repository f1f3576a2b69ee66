"""Mail from outside the bubble: how a gateway's inbound listener seals it, how it is read.

A member's envelope names the member as its sealed sender and is signed by a key the
directory lists. Mail that reaches the bubble from the legacy world (the organisation's
MX hands it to a gateway's inbound listener) has no such sender, so the gateway seals it
under a sealed sender of another form (docs/envelope.md, "Mail from outside"):

    external:<proof>:<reverse-path>

    proof      base64url (no padding) of gateway key (32) || certificate (64) || delegation (64)
    gateway    the Ed25519 verify key of the gateway's deposit credential
    certificate  the bubble root's signature over it (`RootKey.certify_gateway`)
    delegation   the gateway key's signature over INBOUND_CONTEXT || inbound verify key

The inbound key that signs these envelopes is derived from the credential's seed (its
own purpose, never the deposit key itself). `open_external` accepts an envelope only
when that chain ends at a trusted root and the envelope was signed by the delegated key,
and only when its header cannot pass for a member's mail: it must have the shape every
message must have (`bridge.sender.check_structure`), and its From and Sender fields must
not name an address of the bubble's domain, in an address, a display name or a comment
(after RFC 2047 decoding and NFKC, so look-alike at signs count). The message to store
then gets an `ORIGIN_FIELD` line on top, which says it came from outside.

    CannotOpen (bridge.errors)       the proof does not verify (said no more precisely)
    SenderRefused (bridge.sender)    the header claims a bubble author or is malformed

This module does no I/O and never logs.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

import nacl.exceptions
import nacl.signing

from bridge.envelope import MAX_SENDER_BYTES, OpenedEnvelope
from bridge.errors import CannotOpen
from bridge.headers import (
    DEFAULT_LIMITS,
    HeaderBlock,
    HeaderLimits,
    decoded_text,
    parse_addresses,
    parse_header,
)
from bridge.keys import GATEWAY_CERT_CONTEXT, AccountKeys, derive, verify_root_signature
from bridge.sender import SenderRefused, check_structure

PREFIX = "external:"
INBOUND_CONTEXT = b"sealgate-inbound-key-v1\0"
ORIGIN_FIELD = "Sealgate-Origin"
_PROOF_LEN = 32 + 64 + 64
_AUTHOR_FIELDS = ("from", "sender")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class InboundIdentity:
    """What a gateway signs outside mail with: made from its deposit credential."""

    credential_seed: bytes
    certificate: bytes  # the root's signature over the credential's verify key

    @cached_property
    def keys(self) -> AccountKeys:
        """Keys whose signing half signs inbound envelopes (the other halves are unused)."""
        return AccountKeys(derive(self.credential_seed, b"sg-inbound"))

    @cached_property
    def _proof(self) -> str:
        gateway = nacl.signing.SigningKey(self.credential_seed)
        inbound_key = bytes(self.keys.signing.verify_key)
        delegation = gateway.sign(INBOUND_CONTEXT + inbound_key).signature
        return _b64(bytes(gateway.verify_key) + self.certificate + delegation)

    def sender(self, reverse_path: str) -> str:
        """The sealed sender for mail from `reverse_path` ("" for a null reverse path).

        Raises ValueError when the result would be over the envelope's sender limit."""
        sender = f"{PREFIX}{self._proof}:{reverse_path}"
        if len(sender.encode("utf-8")) > MAX_SENDER_BYTES:
            raise ValueError("reverse path too long for a sealed sender")
        return sender


def is_external(sender: str) -> bool:
    """Whether a sealed sender is of the external form (not a member's address)."""
    return sender.startswith(PREFIX)


@dataclass(frozen=True)
class ExternalSender:
    reverse_path: str
    gateway_key: bytes


def verify_sender(opened: OpenedEnvelope, trusted_roots: tuple[bytes, ...]) -> ExternalSender:
    """The external sender of `opened`; `CannotOpen` unless its proof leads to a trusted
    root and its signing key is the one the gateway delegated."""
    proof, colon, reverse_path = opened.sender.removeprefix(PREFIX).partition(":")
    try:
        raw = _unb64(proof)
    except (binascii.Error, ValueError):
        raise CannotOpen() from None
    if not is_external(opened.sender) or not colon or len(raw) != _PROOF_LEN:
        raise CannotOpen()
    gateway_key, certificate, delegation = raw[:32], raw[32:96], raw[96:]
    if verify_root_signature(trusted_roots, GATEWAY_CERT_CONTEXT, gateway_key, certificate) is None:
        raise CannotOpen()
    try:
        nacl.signing.VerifyKey(gateway_key).verify(
            INBOUND_CONTEXT + opened.sender_signing_key, delegation
        )
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise CannotOpen() from None
    return ExternalSender(reverse_path, gateway_key)


def check_external_header(
    header: HeaderBlock, domain: str, limits: HeaderLimits = DEFAULT_LIMITS
) -> None:
    """Raise `SenderRefused` unless `header` is well formed and names no author in `domain`."""
    check_structure(header)
    # the domain itself, not a longer name that starts with it (x@bubble.example.org)
    own = re.compile(re.escape("@" + domain.lower()) + r"(?![a-z0-9-]|\.[a-z0-9])")
    for field in header.fields:
        if field.name not in _AUTHOR_FIELDS:
            continue
        parsed = parse_addresses(field.text, strict=False, max_length=limits.max_address_field)
        texts = [decoded_text(field.text), *(m.display_name for m in parsed.mailboxes)]
        texts += [m.address for m in parsed.mailboxes]
        folded = unicodedata.normalize("NFKC", " ".join(texts)).lower()
        if own.search(folded):
            claimed = next(
                (m.address for m in parsed.mailboxes if m.domain.lower() == domain.lower()), None
            )
            raise SenderRefused(
                "Mail from outside the bubble must not name a bubble address as its author",
                claimed,
            )


def origin_line(sender: ExternalSender) -> bytes:
    """The field the receiving gateway puts on top of an accepted external message."""
    return (
        f"{ORIGIN_FIELD}: external; received from outside the bubble by gateway "
        f"{sender.gateway_key.hex()[:16]}\r\n"
    ).encode("ascii")


def open_external(
    opened: OpenedEnvelope,
    trusted_roots: tuple[bytes, ...],
    domain: str,
    limits: HeaderLimits = DEFAULT_LIMITS,
) -> bytes:
    """The message of an external envelope as the recipient's mailbox is to hold it.

    Raises `CannotOpen` (proof) or a `HeaderError` such as `SenderRefused` (header)."""
    sender = verify_sender(opened, trusted_roots)
    header = parse_header(opened.message, limit=limits.max_header_block)
    check_external_header(header, domain, limits)
    return origin_line(sender) + opened.message
