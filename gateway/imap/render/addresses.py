"""Address fields as IMAP shows them: ENVELOPE's address structures and the normalized
text that SEARCH FROM/TO/CC/BCC compares.

Both read the field with the gateway's one address parser (`bridge.headers`, lenient),
with three things it does not keep put back, as Dovecot and UW-IMAP show them:

- RFC 2047 encoded words stay as sent (ENVELOPE is raw header data, RFC 3501 7.4.2): they
  are hidden from the parser, which would decode them, and restored in the names;
- a comment after an address with no display name becomes its name
  (`user@domain (Real Name)`, the old form of `Real Name <user@domain>`);
- a source route (`<@route:user@domain>`) becomes the address's adl.

Pure functions over text: no I/O, never raises on what a sender wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.headers import parse_addresses

# Private-use characters stand in for the encoded-word delimiters while parsing.
_OPEN, _CLOSE = "\ue000", "\ue001"
_HIDE = str.maketrans({_OPEN: "", _CLOSE: ""})
_ROUTE = re.compile(r"<\s*(@[^<>:\"]*?)\s*:\s*([^<>\s\"]+@[^<>\s\"]+?)\s*>")
_COMMENT = re.compile(r"([^\s<>(),:;\"]+@[^\s<>(),:;\"]+)\s*\(([^()]*)\)")


@dataclass(frozen=True, slots=True)
class Address:
    name: str  # display name as sent (encoded words kept); "" when none
    route: str | None  # "@a,@b" source route, None when none
    local: str
    domain: str


@dataclass(frozen=True, slots=True)
class AddressGroup:
    """A group `name: a, b;`, or with `name` None the addresses outside any group."""

    name: str | None
    addresses: tuple[Address, ...]


def address_groups(value: str) -> tuple[AddressGroup, ...]:
    """The groups of an address field value (unfolded); empty when it holds no address."""
    text = value.translate(_HIDE).replace("=?", _OPEN).replace("?=", _CLOSE)
    routes = {addr.lower(): route for route, addr in _ROUTE.findall(text)}
    comments = {addr.lower(): name.strip() for addr, name in _COMMENT.findall(text)}
    out: list[AddressGroup] = []
    for group in parse_addresses(text, strict=False).groups:
        addresses = []
        for m in group.mailboxes:
            spec = f"{m.local}@{m.domain}".lower()
            name = m.display_name or comments.get(spec, "")
            addresses.append(Address(_restore(name), routes.get(spec), m.local, m.domain))
        name = _restore(group.name) if group.name is not None else None
        out.append(AddressGroup(name, tuple(addresses)))
    return tuple(out)


def _restore(text: str) -> str:
    return text.replace(_OPEN, "=?").replace(_CLOSE, "?=")


def normalized(value: str) -> str:
    """An address field as one line SEARCH looks in: `Name <local@domain>, ...`, groups as
    `group: ...;`, comments and odd spacing gone; encoded words kept (the caller decodes)."""
    parts = []
    for group in address_groups(value):
        members = ", ".join(
            f"{a.name} <{a.local}@{a.domain}>" if a.name else f"{a.local}@{a.domain}"
            for a in group.addresses
        )
        parts.append(members if group.name is None else f"{group.name}: {members};")
    return ", ".join(parts)
