"""The one RFC 5322 header-block parser of Sealgate: bytes in, fields and addresses out.

`parse_header` splits a message's header block into `Field`s (lower-case name, the exact
octets of every line with folding and line ends as received, the unfolded value) and says
where the body starts. Submission policy, the sanitizer, the receiving gateway's sender
check and the IMAP renderer all read headers through it, so they cannot disagree on which
field a line belongs to. The splitter follows RFC 5322 as receivers read it:

- a field is a line ``name *WSP ":" ...`` (name: printable ASCII but ``:``) with every
  following line that starts with a space or tab; white space before the colon (obsolete
  syntax) is accepted and reported (`Field.spaced`), never taken for an mbox line;
- the header block ends at the first empty line (CRLF or LF); a message without one is
  all header;
- a line that is neither a field, a continuation nor empty ends the header block: it and
  everything after it are body (`HeaderBlock.blank_line` is then False);
- an mbox ``From `` line at the very start and continuation lines before the first field
  belong to no field: they are counted in `HeaderBlock.stray_lines` and kept out of
  `fields`.

`parse_addresses` reads an address-list field value with the stdlib's RFC 5322 parser
(`email.headerregistry`): strict, for policy, or lenient, for display.

    HeaderError(BridgeError, ValueError)   the header block or a field cannot be read
    ├── HeaderTooLarge                     the header block exceeds its limit
    └── AddressError                       an address field does not parse strictly

This module does no I/O, never logs, keeps no state but a bounded in-memory cache of
parsed address values, and never puts a header value into an exception message.
"""

from __future__ import annotations

import email.errors
import email.header
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

from bridge.errors import BridgeError

MAX_HEADER_BLOCK = 1 << 20
"""Most bytes the header block (every field line, line ends included) may take."""

MAX_ADDRESS_FIELD = 4096
"""Most characters of an address field value the full parser reads (its cost grows
faster than linearly); a longer value is an `AddressError` when strict and read by the
quick parser when lenient."""


@dataclass(frozen=True)
class HeaderLimits:
    """The parser's limits, as a gateway sets them (`max_header_block`, `max_address_field`)."""

    max_header_block: int = MAX_HEADER_BLOCK
    max_address_field: int = MAX_ADDRESS_FIELD

    def __post_init__(self) -> None:
        for name in ("max_header_block", "max_address_field"):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting '{name}': must be positive")


DEFAULT_LIMITS = HeaderLimits()

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_WHOLE_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")
# After line ends are taken out: C0 controls but HTAB (a lone CR included), and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_LF, _CR = 0x0A, 0x0D
_WSP = (0x20, 0x09)


class HeaderError(BridgeError, ValueError):
    """Root of the parser's errors: a header block or field that cannot be read."""


class HeaderTooLarge(HeaderError):
    """The header block of a message is larger than its limit."""

    def __init__(self, limit: int = MAX_HEADER_BLOCK) -> None:
        super().__init__(f"message header block exceeds {limit} bytes")
        self.limit = limit


class AddressError(HeaderError):
    """An address field value does not parse as RFC 5322 says it must."""

    def __init__(self) -> None:
        super().__init__("address field does not parse")


def unfold(raw: bytes) -> bytes:
    """The value of a field's octets: after the first colon, line ends removed."""
    return raw.partition(b":")[2].replace(b"\r\n", b"\n").replace(b"\n", b"")


class Field(NamedTuple):
    """One header field: its lower-case name and its exact octets (every line, with the
    line ends as received; the last line of the input may lack one)."""

    name: str
    raw: bytes

    @property
    def value(self) -> bytes:
        """The unfolded value: the octets after the colon, line ends removed."""
        return unfold(self.raw)

    @property
    def text(self) -> str:
        """The unfolded value as text, undecodable octets escaped, white space trimmed."""
        return self.value.decode("utf-8", "surrogateescape").strip()

    @property
    def head_len(self) -> int:
        """Bytes of the first line up to and including the colon."""
        return self.raw.index(b":") + 1

    @property
    def spaced(self) -> bool:
        """Whether white space stands between the field name and its colon."""
        return self.raw[self.head_len - 2] in _WSP

    @property
    def has_control(self) -> bool:
        """Whether a line holds a control character or NUL (HTAB and 8-bit octets are
        fine; a CR that does not end a line counts)."""
        return _CONTROL.search(self.raw.replace(b"\r\n", b"").replace(b"\n", b"")) is not None


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """A parsed header block.

    fields       the fields in order
    end          offset of the first byte after the header block (its empty line included)
    body_start   offset of the body, or None when the input ends inside the header block
    blank_line   whether the header block ended with an empty line (False when a line
                 that is not a field started the body, or when there is no body)
    stray_lines  lines in the header block that belong to no field (dropped mbox line,
                 continuations before the first field)
    """

    fields: tuple[Field, ...]
    end: int
    body_start: int | None
    blank_line: bool
    stray_lines: int

    def get_all(self, name: str) -> tuple[Field, ...]:
        """Every field called `name` (lower-case), in order."""
        return tuple(f for f in self.fields if f.name == name)

    def first(self, name: str) -> Field | None:
        """The first field called `name` (lower-case), or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None


def parse_header(
    message: bytes,
    *,
    limit: int | None = MAX_HEADER_BLOCK,
    start: int = 0,
    stop: int | None = None,
) -> HeaderBlock:
    """Split the header block of `message[start:stop]` into fields; see the module docstring.

    Positions in the result index `message` itself, so a part inside a message is read
    without copying it. Raises `HeaderTooLarge` when the header block exceeds `limit`
    bytes (None: no limit, for messages already stored, which must always be readable).
    """
    fields: list[Field] = []
    stray = 0
    end = len(message) if stop is None else stop
    bound = end if limit is None else min(end, start + limit)
    pos = start
    name: str | None = None
    lines: list[bytes] = []

    def close() -> None:
        if name is not None:
            fields.append(Field(name, b"".join(lines)))

    while pos < end:
        # The common case: a whole field, every line LF-terminated, inside the limit.
        whole = _WHOLE_FIELD.match(message, pos, bound)
        if whole is not None:
            close()
            name, lines = None, []
            fields.append(Field(whole.group(1).decode("ascii").lower(), whole.group()))
            pos = whole.end()
            continue
        first = message[pos]
        if first == _LF or (first == _CR and (pos + 1 == end or message[pos + 1] == _LF)):
            close()
            start = pos + 1 if first == _LF else min(pos + 2, end)
            return HeaderBlock(tuple(fields), start, start, True, stray)
        # What is left: a line that starts the body, an mbox From line, a continuation,
        # the start of a folded field, a last line without LF, or one crossing the limit.
        nl = message.find(b"\n", pos, bound)
        line_end = nl if nl >= 0 else end
        head = None if first in _WSP else _FIELD_NAME.match(message, pos, line_end)
        unix_from = head is None and pos == start and message.startswith(b"From ", pos)
        if head is None and first not in _WSP and not unix_from:
            close()
            return HeaderBlock(tuple(fields), pos, pos, False, stray)
        if nl < 0 and end > bound:
            raise HeaderTooLarge(bound)
        line = message[pos : line_end + 1]
        if head is not None:
            close()
            name, lines = head.group(1).decode("ascii").lower(), [line]
        elif name is not None:
            lines.append(line)
        elif fields and first in _WSP:  # continues a field the quick path took whole
            last = fields.pop()
            name, lines = last.name, [last.raw, line]
        else:
            stray += 1
        pos = line_end + 1
    close()
    return HeaderBlock(tuple(fields), end, None, False, stray)



def block_end(message: bytes, *, start: int = 0, stop: int | None = None) -> int:
    """`parse_header(message, limit=None, start=start, stop=stop).end`, without making the
    fields: whole fields are skipped with the parser's quick pattern, and an input that
    does not end its header block with an empty line after them is left to the parser."""
    end = len(message) if stop is None else stop
    pos = start
    whole_field = _WHOLE_FIELD.match
    while pos < end:
        whole = whole_field(message, pos, end)
        if whole is None:
            break
        pos = whole.end()
    else:
        return end
    first = message[pos]
    if first == _LF:
        return pos + 1
    if first == _CR and (pos + 1 == end or message[pos + 1] == _LF):
        return min(pos + 2, end)
    return parse_header(message, limit=None, start=start, stop=stop).end


def field_spans(block: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, lower-case name) of every field `parse_header(block, limit=None)`
    finds, each field being `block[start:end]`. Whole fields up to an empty line (a stored
    header block, as a rule) are read with the parser's quick pattern, no `Field` made;
    anything else is left to the parser."""
    spans: list[tuple[int, int, bytes]] = []
    end = len(block)
    pos = 0
    whole_field = _WHOLE_FIELD.match
    while pos < end:
        whole = whole_field(block, pos, end)
        if whole is None:
            break
        spans.append((pos, whole.end(), whole.group(1).lower()))
        pos = whole.end()
    if pos == end or block.startswith((b"\n", b"\r\n"), pos) or block[pos:] == b"\r":
        return spans
    spans = []
    pos = 0
    for name, raw in parse_header(block, limit=None).fields:
        start = block.find(raw, pos)  # a field's octets follow the one before, or a stray line
        pos = start + len(raw)
        spans.append((start, pos, name.encode("ascii")))
    return spans

# ---------------------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One address: its display name (RFC 2047 decoded; "" when none) and its parts."""

    display_name: str
    local: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local


@dataclass(frozen=True, slots=True)
class Group:
    """A group (``name: a, b;``), or with `name` None the mailboxes outside any group."""

    name: str | None
    mailboxes: tuple[Mailbox, ...]


@dataclass(frozen=True, slots=True)
class AddressList:
    groups: tuple[Group, ...]

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        return tuple(m for g in self.groups for m in g.mailboxes)


def parse_addresses(
    value: str, *, strict: bool = True, max_length: int = MAX_ADDRESS_FIELD
) -> AddressList:
    """An address-list field value (unfolded text) as groups of mailboxes.

    Strict (for policy): the stdlib's RFC 5322 parser must find no defect at all, or
    `AddressError` is raised. Lenient (for display): what that parser makes of the value,
    defects and all; when it fails or the value is longer than `max_length`, what the
    quick `email.utils.getaddresses` makes of it; when that fails too, no address.
    """
    if len(value) <= max_length:
        parsed, defects = _full_parse(value)
        if parsed is not None and (not defects or not strict):
            return parsed
    if strict:
        raise AddressError()
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # noqa: BLE001 - the quick parser recurses on nested comments too
        return AddressList(())
    mailboxes = []
    for display, spec in pairs:
        if spec:
            local, at, domain = spec.rpartition("@")
            mailboxes.append(Mailbox(display, local if at else spec, domain if at else ""))
    return AddressList((Group(None, tuple(mailboxes)),) if mailboxes else ())


@functools.lru_cache(maxsize=1024)
def _full_parse(value: str) -> tuple[AddressList | None, bool]:
    """The stdlib parser's reading of `value` and whether it found defects. Cached: a
    mailbox repeats its addresses, and this parser costs ~0.1 ms a field."""
    try:
        header = email.policy.default.header_factory("to", value)
        return AddressList(tuple(
            Group(g.display_name, tuple(
                Mailbox(a.display_name, a.username, a.domain) for a in g.addresses
            ))
            for g in header.groups
        )), bool(header.defects)
    # The parser has failure modes of its own (RecursionError on nested comments,
    # IndexError, HeaderParseError); any of them means "does not parse".
    except Exception:  # noqa: BLE001
        return None, True


def decoded_text(value: str) -> str:
    """A field value with RFC 2047 encoded words decoded (as is when they do not decode)."""
    if "=?" not in value:  # no encoded word: the stdlib gives the value back as it is
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value
