"""The sender rules: a header block may only name as its author the one who sealed it.

`check_sender(header, sender)` applies them to a parsed header block (`bridge.headers`)
and a sender address; submission runs it with the authenticated account, the receiving
gateway with the envelope's sealed, signed sender, so both refuse the same messages:

- no control character or NUL in a field line (HTAB and 8-bit octets are fine);
- no field name followed by white space before its colon;
- every line of the header block belongs to a field, and the block ends with an empty
  line (or the message has no body), so no reader can take a line for a field that
  this parser did not;
- at most one From, Sender, Date, Subject, To, Cc, Message-ID and Reply-To field;
- exactly one From field, holding exactly one address, and that address is the sender;
- a Sender field, if any, holds exactly the sender's address;
- the display names and comments of From and Sender contain no ``@`` but in the
  sender's own address (look-alike at signs included, after NFKC), and no Reply-To
  display name contains an ``@`` but in its own address or the sender's;
- From, Sender and Reply-To parse strictly (RFC 5322, no defects).

    HeaderError (bridge.headers)
    └── SenderRefused   a rule above is broken; `reason` is one sentence for the reply

It does no I/O and never puts a header value into an exception message; `claimed` (the
address the header claimed instead of the sender, when there is one) is an attribute for
the recipient's notice, not part of the message.
"""

from __future__ import annotations

import re
import unicodedata

from bridge.headers import (
    DEFAULT_LIMITS,
    AddressError,
    Field,
    HeaderBlock,
    HeaderError,
    HeaderLimits,
    decoded_text,
    parse_addresses,
)

SINGLE_FIELDS = ("from", "sender", "date", "subject", "to", "cc", "message-id", "reply-to")
"""Fields a message may carry at most once (RFC 5322 section 3.6)."""

_AT_TOKEN = re.compile(r"[^\s<>()\[\]\"',;:]*@[^\s<>()\[\]\"',;:]*")
_SPELLING = {"message-id": "Message-ID", "reply-to": "Reply-To", "cc": "Cc"}


class SenderRefused(HeaderError):
    """The header block breaks a sender rule; the message is the reason, one sentence."""

    def __init__(self, reason: str, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


def _spelt(name: str) -> str:
    return _SPELLING.get(name, name.capitalize())


def check_sender(header: HeaderBlock, sender: str, limits: HeaderLimits = DEFAULT_LIMITS) -> None:
    """Raise `SenderRefused` unless `header` names `sender`, and only it, as its author.
    Address fields longer than `limits.max_address_field` do not parse."""
    own = sender.lower()
    try:
        _check(header, own, limits.max_address_field)
    except SenderRefused as refused:
        if refused.claimed is None:
            refused.claimed = _other_author(header, own)
        raise


def _other_author(header: HeaderBlock, own: str) -> str | None:
    """The first address other than `own` that a From or Sender field names, read leniently."""
    for field in header.fields:
        if field.name in ("from", "sender"):
            for mailbox in parse_addresses(field.text, strict=False).mailboxes:
                if mailbox.address.lower() != own:
                    return mailbox.address
    return None


def check_structure(header: HeaderBlock) -> None:
    """The rules on the shape of a header block alone (the first four above): what every
    message must pass whoever sent it, mail from outside the bubble included."""
    for field in header.fields:
        if field.has_control:
            raise SenderRefused("Header fields must not contain control characters or NUL")
        if field.spaced:
            raise SenderRefused("A header field name must not be followed by white space")
    if header.stray_lines or (header.body_start is not None and not header.blank_line):
        raise SenderRefused("Every header line must belong to a field")
    names = [field.name for field in header.fields]
    for name in SINGLE_FIELDS:
        if names.count(name) > 1:
            raise SenderRefused(f"The message must not have more than one {_spelt(name)} field")


def _check(header: HeaderBlock, own: str, max_length: int) -> None:
    check_structure(header)
    author = header.first("from")
    if author is None:
        raise SenderRefused("The message must have a From field")
    _check_author(author, own, max_length)
    on_behalf = header.first("sender")
    if on_behalf is not None:
        _check_author(on_behalf, own, max_length)
    reply_to = header.first("reply-to")
    if reply_to is not None:
        try:
            replies = parse_addresses(reply_to.text, max_length=max_length)
        except AddressError:
            raise SenderRefused("The Reply-To field must be a valid address list") from None
        for mailbox in replies.mailboxes:
            foreign = _foreign_at(mailbox.display_name, (mailbox.address.lower(), own))
            if foreign is not None:
                raise SenderRefused(
                    "A Reply-To display name must not contain another address", foreign
                )


def _check_author(field: Field, own: str, max_length: int) -> None:
    """From or Sender: one address, the sender's, and no other address in its text."""
    name = _spelt(field.name)
    try:
        parsed = parse_addresses(field.text, max_length=max_length)
    except AddressError:
        raise SenderRefused(f"The {name} field must be one valid address") from None
    mailboxes = parsed.mailboxes
    if len(mailboxes) != 1 or parsed.groups[0].name is not None:
        raise SenderRefused(f"The {name} field must hold exactly one address")
    mailbox = mailboxes[0]
    if mailbox.address.lower() != own:
        raise SenderRefused(f"The {name} address must be the sending account", mailbox.address)
    # The display name as decoded by the parser, and the whole value with its comments.
    foreign = _foreign_at(mailbox.display_name, (own,))
    if foreign is None:
        foreign = _foreign_at(decoded_text(field.text), (own,))
    if foreign is not None:
        raise SenderRefused(
            f"The {name} display name must not contain an address other than the account's",
            foreign,
        )


def _foreign_at(text: str, allowed: tuple[str, ...]) -> str | None:
    """The text around an at sign (or a look-alike, after NFKC) in `text` outside the
    allowed addresses, or None when there is none."""
    folded = unicodedata.normalize("NFKC", text).lower()
    for address in allowed:
        folded = folded.replace(address, " ")
    token = _AT_TOKEN.search(folded)
    return None if token is None else token.group()
