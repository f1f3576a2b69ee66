"""Pure submission policy: who may send, what a message must carry. No I/O.

Every refusal is an `SmtpRefusal` that carries its SMTP reply, so the handler only
has to return `str(refusal)`. Header blocks come parsed (`bridge.headers.parse_header`,
once per message); the header rules themselves live in `bridge.sender`, shared with the
receiving gateway, and docs/submission-policy.md lists them.
"""

from __future__ import annotations

import email.utils
import time

import nacl.utils

from bridge.headers import DEFAULT_LIMITS, HeaderBlock, HeaderLimits
from bridge.sender import SenderRefused, check_sender


class SmtpRefusal(Exception):
    """A policy decision with its wire form, e.g. '550 5.7.1 ...'."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply

    def __str__(self) -> str:
        return self.reply


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def check_headers(
    header: HeaderBlock, account: str, limits: HeaderLimits = DEFAULT_LIMITS
) -> None:
    """The header block names the authenticated account, and only it, as its author
    (the rules of `bridge.sender`, the same the receiving gateway applies)."""
    try:
        check_sender(header, account, limits)
    except SenderRefused as refused:
        raise SmtpRefusal(f"550 5.7.1 {refused.reason}") from None


def check_envelope_sender(mail_from: str, account: str) -> None:
    if mail_from.lower() != account.lower():
        raise SmtpRefusal("553 5.7.1 Sender address is not the authenticated account")


def complete_headers(
    message: bytes, header: HeaderBlock, domain: str, now: float | None = None
) -> bytes:
    """Add Date and Message-ID when the client left them out (RFC 6409 section 8).

    `header` is the parsed header block of the message as submitted."""
    added = b""
    if header.first("date") is None:
        stamp = email.utils.formatdate(now if now is not None else time.time(), localtime=False)
        added += f"Date: {stamp}\r\n".encode("ascii")
    if header.first("message-id") is None:
        added += f"Message-ID: <{nacl.utils.random(16).hex()}@{domain}>\r\n".encode("ascii")
    return added + message


def declared_size(mail_options: list[str]) -> int | None:
    """The size a client declared with MAIL FROM's SIZE= parameter (RFC 1870), if any."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def check_transaction_size(size: int, recipients: int, limit: int) -> None:
    """Each recipient gets its own sealed copy: size times recipients is what a
    transaction costs the outbox."""
    if size * recipients > limit:
        raise SmtpRefusal(
            "552 5.3.4 Message size times recipients exceeds this gateway's limit"
            " per message; send it to fewer recipients at a time"
        )
