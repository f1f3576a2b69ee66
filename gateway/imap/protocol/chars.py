"""Character classes of the IMAP grammar (RFC 3501 section 9) and the system flags."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.imap.protocol.responses import Raw, Value

CTL = frozenset(range(0x00, 0x20)) | {0x7F}
ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | CTL
ATOM_CHARS = frozenset(range(0x01, 0x80)) - ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | frozenset(b"%*]")
BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
SEQ_CHARS = frozenset(b"0123456789:,*")
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"  # set by the server only (RFC 3501 2.3.2), never stored
SYSTEM_FLAG_NAMES = {f.upper(): f for f in SYSTEM_FLAGS}
DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
# date-time (RFC 3501 section 9) inside its quotes; date-day-fixed may lead with a space.
DATE_TIME = re.compile(
    rb'" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


def is_atom(text: str) -> bool:
    return text.isascii() and all(ord(c) in ATOM_CHARS for c in text)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flag_list(flags: Iterable[str]) -> tuple[Value, ...]:
    """Flags as atoms, sorted; a stored keyword that is not a valid atom is left out, not
    mangled."""
    return tuple(
        Raw.of(f) for f in sorted(flags) if f in SYSTEM_FLAGS or f == RECENT or (f and is_atom(f))
    )
