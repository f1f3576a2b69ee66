"""RCPT for both SMTP listeners (submission and inbound): one recipient, one reply.

Checks the address (a non-ASCII one only after MAIL FROM's SMTPUTF8), the count and
the declared size, then resolves the recipient in the signed directory. The listeners
differ only in what they answer for an address outside the bubble (submission may
admit it: `gateway.pgp.outside`). Holds no state of its own; never logs an address.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.directory import DirectoryEntry, normalize_address
from gateway.pgp.outside import OutsideRecipient
from gateway.recipients import DirectoryUnavailable, Recipients, UnknownAddress
from gateway.smtp.policy import (
    SmtpRefusal,
    address_domain,
    check_transaction_size,
    declared_size,
)

ACCEPTED = "250 2.1.5 Recipient ok"


async def resolve_recipient(
    address: str,
    resolved: dict[str, DirectoryEntry],
    *,
    recipients: Recipients,
    domain: str,
    outside_reply: str,
    max_recipients: int,
    max_transaction_bytes: int,
    mail_options: list[str],
    outside: Callable[[str], OutsideRecipient | str] | None = None,
    resolved_outside: dict[str, OutsideRecipient] | None = None,
) -> str:
    """The reply to RCPT TO:<address>; on `ACCEPTED` the entry is added to `resolved`.

    With `outside` (submission), a recipient outside the bubble gets its answer: a
    reply refusing it, or the recipient, added to `resolved_outside`.

    A size declared with MAIL FROM's SIZE= counts once per recipient against
    `max_transaction_bytes` (each recipient gets a sealed copy of its own).
    """
    if not address.isascii() and "SMTPUTF8" not in mail_options:
        return "553 5.6.7 Non-ASCII address without SMTPUTF8 in MAIL FROM (RFC 6531)"
    try:
        key = normalize_address(address)
    except ValueError:
        return "501 5.1.3 Bad recipient address syntax"
    others = {} if resolved_outside is None else resolved_outside
    if key in resolved or key in others:
        return "250 2.1.5 Recipient ok (duplicate)"
    if len(resolved) + len(others) >= max_recipients:
        return "452 4.5.3 Too many recipients"
    size = declared_size(mail_options)
    try:
        if size is not None:
            check_transaction_size(size, len(resolved) + len(others) + 1, max_transaction_bytes)
    except SmtpRefusal as refusal:
        return refusal.reply
    if address_domain(key) != domain:
        if outside is None:
            return outside_reply
        admitted = outside(key)
        if isinstance(admitted, str):
            return admitted
        others[key] = admitted
        return ACCEPTED
    try:
        entry = await recipients.resolve(key)
    except (UnknownAddress, DirectoryUnavailable) as refusal:  # RevokedAddress too
        return refusal.smtp_reply
    resolved[key] = entry
    return ACCEPTED
