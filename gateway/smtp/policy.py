"""Pure submission policy: who may send, what a message must carry. No I/O.

Every refusal is an `SmtpRefusal` that carries its SMTP reply, so the handler only
has to return `str(refusal)`.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

import nacl.utils


class SmtpRefusal(Exception):
    """A policy decision with its wire form, e.g. '550 5.7.1 ...'."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply

    def __str__(self) -> str:
        return self.reply


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    return message if end < 0 else message[: end + 2]


@dataclass(frozen=True)
class HeaderFacts:
    """What submission policy needs to know of a message's header block (parsed once)."""

    from_addresses: tuple[str, ...]  # lower-case, in order
    has_date: bool
    has_message_id: bool


def header_facts(message: bytes) -> HeaderFacts:
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(message))
    values = [str(v) for v in headers.get_all("From", [])]
    return HeaderFacts(
        from_addresses=tuple(a.lower() for _, a in email.utils.getaddresses(values) if a),
        has_date=headers.get("Date") is not None,
        has_message_id=headers.get("Message-ID") is not None,
    )


def check_header_from(facts: HeaderFacts, account: str) -> None:
    """The From header must name exactly the authenticated account."""
    if facts.from_addresses != (account.lower(),):
        raise SmtpRefusal("550 5.7.1 From header must be the authenticated account")


def check_envelope_sender(mail_from: str, account: str) -> None:
    if mail_from.lower() != account.lower():
        raise SmtpRefusal("553 5.7.1 Sender address is not the authenticated account")


def complete_headers(
    message: bytes, facts: HeaderFacts, domain: str, now: float | None = None
) -> bytes:
    """Add Date and Message-ID when the client left them out (RFC 6409 section 8)."""
    added = b""
    if not facts.has_date:
        stamp = email.utils.formatdate(now if now is not None else time.time(), localtime=False)
        added += f"Date: {stamp}\r\n".encode("ascii")
    if not facts.has_message_id:
        added += f"Message-ID: <{nacl.utils.random(16).hex()}@{domain}>\r\n".encode("ascii")
    return added + message
