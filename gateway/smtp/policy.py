"""Pure submission policy: who may send, what a message must carry. No I/O.

Every refusal is an `SmtpRefusal` that carries its SMTP reply, so the handler only
has to return `str(refusal)`.
"""

from __future__ import annotations

import email.utils
import time
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


def from_addresses(message: bytes) -> list[str]:
    """The addresses in the From header(s), lower-case."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(message))
    values = [str(v) for v in headers.get_all("From", [])]
    return [a.lower() for _, a in email.utils.getaddresses(values) if a]


def check_header_from(message: bytes, account: str) -> None:
    """The From header must name exactly the authenticated account."""
    found = from_addresses(message)
    if found != [account.lower()]:
        raise SmtpRefusal("550 5.7.1 From header must be the authenticated account")


def check_envelope_sender(mail_from: str, account: str) -> None:
    if mail_from.lower() != account.lower():
        raise SmtpRefusal("553 5.7.1 Sender address is not the authenticated account")


def complete_headers(message: bytes, domain: str, now: float | None = None) -> bytes:
    """Add Date and Message-ID when the client left them out (RFC 6409 section 8)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(message))
    added = b""
    if headers.get("Date") is None:
        stamp = email.utils.formatdate(now if now is not None else time.time(), localtime=False)
        added += f"Date: {stamp}\r\n".encode("ascii")
    if headers.get("Message-ID") is None:
        added += f"Message-ID: <{nacl.utils.random(16).hex()}@{domain}>\r\n".encode("ascii")
    return added + message
