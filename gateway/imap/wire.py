"""IMAP4rev1 on the wire, server side, sans-I/O: bytes in, events out; responses out as bytes.

Holds `ImapServerConnection` (framing of command lines and literals, with limits), the typed
command events it produces, the response types and their serialization, and the modified
UTF-7 mailbox-name codec. It never imports asyncio, never touches a socket, never looks at
storage: `state` decides what a command means, `server` moves the bytes.

Fuzz rule: whatever bytes arrive, `next_event` returns an event or raises
`RemoteProtocolError`; nothing else.

Errors of the IMAP package, one root:

    ImapError
    ├── RemoteProtocolError   the peer sent something that is not IMAP; carries the BAD
    │                         response to send and whether the connection must close
    ├── LocalProtocolError    the server tried to send or do something IMAP forbids (a bug)
    └── CommandFailed         a well-formed command failed: tagged NO or BAD with a code,
                              or BYE when the connection cannot go on
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import NoReturn

from gateway.imap.backend import FlagMode

# ---------------------------------------------------------------------------------------
# Errors


class ImapError(Exception):
    """Root of every error raised by `gateway.imap`."""


class LocalProtocolError(ImapError):
    """The server tried to send or do something the protocol forbids."""


# ---------------------------------------------------------------------------------------
# Responses (server -> client) and the values inside them


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"
    PREAUTH = "PREAUTH"


@dataclass(frozen=True, slots=True)
class Raw:
    """Octets sent verbatim: atoms, numbers already formatted, flags, fetch item names."""

    data: bytes

    @classmethod
    def of(cls, text: str) -> Raw:
        return cls(text.encode("ascii"))


@dataclass(frozen=True, slots=True)
class Adjacent:
    """Values written one after the other without separators (multipart BODYSTRUCTURE)."""

    items: tuple[Value, ...]


# str: a string, quoted when it can be, else a literal (non-ASCII is sent as UTF-8, and
# surrogate escapes give back the original octets); bytes: always a literal; None: NIL.
Value = None | int | str | bytes | Raw | Adjacent | tuple["Value", ...]


@dataclass(frozen=True, slots=True)
class Code:
    """A response code, `[NAME args]`: `Code("UIDVALIDITY", (7,))`."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class Tagged:
    """`tag OK [code] text`: the completion of one command."""

    tag: str
    status: Status
    text: str
    code: Code | None = None


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """`* OK [code] text`, `* BYE text`, `* BAD text`."""

    status: Status
    text: str
    code: Code | None = None


@dataclass(frozen=True, slots=True)
class Untagged:
    """`* value value ...`: server data such as `* 3 EXISTS` or `* 1 FETCH (...)`."""

    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Continuation:
    """`+ text`: go ahead with a literal, or a SASL challenge / IDLE acknowledgement."""

    text: str = ""


Response = Tagged | UntaggedStatus | Untagged | Continuation


class RemoteProtocolError(ImapError):
    """The peer sent bytes that are not a valid IMAP command.

    `response` is what to answer (a tagged BAD when the tag could be read, else `* BAD`);
    `fatal` means the byte stream can no longer be trusted and the connection must close
    after the answer.
    """

    def __init__(self, response: Tagged | UntaggedStatus, *, fatal: bool = False) -> None:
        super().__init__(response.text)
        self.response = response
        self.fatal = fatal


class CommandFailed(ImapError):
    """A well-formed command cannot be carried out; renders as `tag NO [code] text`.

    Status BAD for arguments that make no sense here; status BYE when the session cannot go
    on (the selected mailbox vanished): that renders as `* BYE text` and the server closes.
    """

    def __init__(self, status: Status, text: str, code: Code | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code

    def response(self, tag: str) -> Tagged | UntaggedStatus:
        if self.status is Status.BYE:
            return UntaggedStatus(Status.BYE, self.text, self.code)
        return Tagged(tag, self.status, self.text, self.code)


_QUOTABLE = frozenset(range(0x20, 0x7F))
_MAX_QUOTED = 1024


def _write_value(value: Value, out: list[bytes]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, bool):
        raise LocalProtocolError("IMAP has no boolean values")
    elif isinstance(value, int):
        if value < 0:
            raise LocalProtocolError("IMAP numbers are never negative")
        out.append(b"%d" % value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
        if len(data) <= _MAX_QUOTED and _QUOTABLE.issuperset(data):
            out.append(b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
        else:
            out.append(b"{%d}\r\n" % len(data))
            out.append(data)
    elif isinstance(value, bytes):
        if value:
            out.append(b"{%d}\r\n" % len(value))
            out.append(value)
        else:
            out.append(b'""')
    elif isinstance(value, Adjacent):
        for item in value.items:
            _write_value(item, out)
    else:
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _write_value(item, out)
        out.append(b")")


def _resp_text(text: str, code: Code | None, out: list[bytes]) -> None:
    if code is not None:
        out.append(b"[" + code.name.encode("ascii"))
        for arg in code.args:
            out.append(b" ")
            _write_value(arg, out)
        out.append(b"] ")
    if not text or "\r" in text or "\n" in text or (code is None and text.startswith("[")):
        raise LocalProtocolError("response text must be one non-empty line")
    out.append(text.encode("utf-8"))


def serialize(response: Response) -> bytes:
    """The octets of one response, CRLF included."""
    out: list[bytes] = []
    if isinstance(response, Tagged):
        out.append(response.tag.encode("ascii") + b" " + response.status.value.encode() + b" ")
        _resp_text(response.text, response.code, out)
    elif isinstance(response, UntaggedStatus):
        out.append(b"* " + response.status.value.encode() + b" ")
        _resp_text(response.text, response.code, out)
    elif isinstance(response, Untagged):
        out.append(b"*")
        for value in response.values:
            out.append(b" ")
            _write_value(value, out)
    else:
        if "\r" in response.text or "\n" in response.text:
            raise LocalProtocolError("continuation text must be one line")
        out.append(b"+ " + response.text.encode("utf-8"))
    out.append(b"\r\n")
    return b"".join(out)


# ---------------------------------------------------------------------------------------
# Sequence sets


MAX_NUMBER = 0xFFFF_FFFF  # number = 32-bit unsigned (RFC 3501 section 4.2)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """`2,4:6,10:*` as ranges of (first, last); None stands for `*`."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def __str__(self) -> str:
        def one(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)

    def intervals(self, star: int) -> list[tuple[int, int]]:
        """Sorted, merged closed intervals, with `*` standing for `star`."""
        spans = sorted(
            (min(a, b), max(a, b))
            for a, b in (
                (star if x is None else x, star if y is None else y) for x, y in self.ranges
            )
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def select(self, sorted_values: Sequence[int], star: int) -> Iterator[int]:
        """Indexes into `sorted_values` (ascending) of the values this set contains."""
        for lo, hi in self.intervals(star):
            yield from range(bisect_left(sorted_values, lo), bisect_right(sorted_values, hi))

    def highest_number(self) -> int:
        """The largest explicit number, 0 when the set is only `*`."""
        return max((n for pair in self.ranges for n in pair if n is not None), default=0)

    def has_star(self) -> bool:
        return any(n is None for pair in self.ranges for n in pair)


# ---------------------------------------------------------------------------------------
# FETCH attributes


class FetchKind(enum.Enum):
    UID = "UID"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODYSTRUCTURE = "BODYSTRUCTURE"
    BODY = "BODY"  # BODYSTRUCTURE without extension data
    SECTION = "BODY[]"  # BODY[...] and BODY.PEEK[...]
    RFC822 = "RFC822"
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_TEXT = "RFC822.TEXT"


class SectionText(enum.Enum):
    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """What is inside `BODY[...]`: a part path and what of the part."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()  # HEADER.FIELDS (.NOT), spelled as the client sent them

    def __str__(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text is not None:
            spec = f"{spec}.{self.text.value}" if spec else self.text.value
        if self.text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
            names = " ".join(
                name if name and is_atom(name) else _quote(name) for name in self.fields
            )
            spec = f"{spec} ({names})"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    kind: FetchKind
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (origin, octets)
    peek: bool = False

    @property
    def response_name(self) -> str:
        """The item name in the FETCH response (`BODY[HEADER]<0>` for `BODY.PEEK[HEADER]<0.9>`)."""
        if self.kind is not FetchKind.SECTION:
            return str(self.kind.value)
        name = f"BODY[{self.section or ''}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        return name

    @property
    def sets_seen(self) -> bool:
        if self.kind is FetchKind.SECTION:
            return not self.peek
        return self.kind in (FetchKind.RFC822, FetchKind.RFC822_TEXT)

    @property
    def content(self) -> Content:
        """What of the message this item reads: nothing, the header block, or all of it."""
        kind = self.kind
        if kind in _METADATA_KINDS:
            return Content.NONE
        if kind is FetchKind.ENVELOPE or kind is FetchKind.RFC822_HEADER:
            return Content.HEADER
        section = self.section
        if (
            kind is FetchKind.SECTION
            and section is not None
            and not section.part
            and section.text in _HEADER_TEXTS
        ):
            return Content.HEADER
        return Content.FULL


class Content(enum.IntEnum):
    """How much of a message answering something takes, least first."""

    NONE = 0  # metadata: UID, flags, internal date, size
    HEADER = 1  # the header block (`gateway.imap.backend.header_block`)
    FULL = 2  # the whole message


_METADATA_KINDS = frozenset(
    {FetchKind.UID, FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE}
)
_HEADER_TEXTS = frozenset(
    {SectionText.HEADER, SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT}
)


_MACROS: dict[str, tuple[FetchKind, ...]] = {
    "ALL": (FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE, FetchKind.ENVELOPE),
    "FAST": (FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE),
    "FULL": (
        FetchKind.FLAGS,
        FetchKind.INTERNALDATE,
        FetchKind.RFC822_SIZE,
        FetchKind.ENVELOPE,
        FetchKind.BODY,
    ),
}

_SIMPLE_ATTRIBUTES = {
    kind.value: kind for kind in FetchKind if kind not in (FetchKind.SECTION, FetchKind.BODY)
}


# ---------------------------------------------------------------------------------------
# SEARCH keys


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """SEEN / UNSEEN / ... / KEYWORD x / UNKEYWORD x."""

    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class SearchRecent:
    """RECENT (present) / OLD (absent); \\Recent is never set by this server."""

    present: bool


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A sequence set (message numbers) or `UID set`."""

    sequence_set: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class SearchSize:
    larger: bool
    size: int


class DateField(enum.Enum):
    INTERNAL = "internal"  # BEFORE / ON / SINCE
    SENT = "sent"  # SENTBEFORE / SENTON / SENTSINCE (the Date: header)


class DateRelation(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class SearchDate:
    field: DateField
    relation: DateRelation
    day: date


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name value; FROM/TO/CC/BCC/SUBJECT are HEADER with that name."""

    name: str
    value: bytes


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY value (with_headers False) or TEXT value (with_headers True)."""

    value: bytes
    with_headers: bool


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchRecent
    | SearchSet
    | SearchSize
    | SearchDate
    | SearchHeader
    | SearchText
    | SearchNot
    | SearchOr
    | SearchAnd
)


# ---------------------------------------------------------------------------------------
# Events (client -> server)


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing complete yet: call `receive_data`."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side; any partial command is dropped."""


@dataclass(frozen=True, slots=True)
class LiteralContinuation:
    """The client waits for `+` before sending a synchronizing literal: send a Continuation."""

    tag: str
    command: str


@dataclass(frozen=True, slots=True)
class ContinuationLine:
    """The line the client sent after the server's `+` (a SASL response, later IDLE's DONE)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Command:
    tag: str


@dataclass(frozen=True, slots=True)
class Capability(Command):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Logout(Command):
    pass


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    pass


@dataclass(frozen=True, slots=True)
class Login(Command):
    userid: str
    password: str

    def __repr__(self) -> str:
        return f"Login(tag={self.tag!r}, userid=..., password=...)"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    mechanism: str  # upper case
    initial_response: bytes | None  # SASL-IR, base64-decoded; b"" for "="

    def __repr__(self) -> str:
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, ...)"


@dataclass(frozen=True, slots=True)
class Id(Command):
    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]  # upper case


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    pass


@dataclass(frozen=True, slots=True)
class Select(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Examine(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class List(Command):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class StatusCommand(Command):
    mailbox: str
    items: tuple[str, ...]  # upper case


@dataclass(frozen=True, slots=True)
class Check(Command):
    pass


@dataclass(frozen=True, slots=True)
class Close(Command):
    pass


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    pass


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    uids: SequenceSet | None = None  # UID EXPUNGE (UIDPLUS) when given


@dataclass(frozen=True, slots=True)
class Search(Command):
    key: SearchKey
    charset: str | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Store(Command):
    sequence_set: SequenceSet
    mode: FlagMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False


Event = NeedData | ConnectionClosed | LiteralContinuation | ContinuationLine | Command


# ---------------------------------------------------------------------------------------
# Character classes (RFC 3501 section 9)

_CTL = frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | _CTL
_ATOM_CHARS = frozenset(range(0x01, 0x80)) - _ATOM_SPECIALS
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
_TAG_CHARS = _ASTRING_CHARS - {ord("+")}
_LIST_CHARS = _ATOM_CHARS | frozenset(b"%*]")
_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_SEQ_CHARS = frozenset(b"0123456789:,*")
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_FLAGS = {f.upper(): f for f in SYSTEM_FLAGS}
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


def is_atom(text: str) -> bool:
    return text.isascii() and all(ord(c) in _ATOM_CHARS for c in text)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 section 5.1.3)


def encode_mailbox(name: str) -> str:
    """A mailbox name as sent on the wire (ASCII, `&` ... `-` for everything else)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name from the wire; ValueError when it is not modified UTF-7."""
    if not raw.isascii():
        raise ValueError("mailbox names are 7-bit (modified UTF-7)")
    text = raw.decode("ascii")
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift")
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        if not re.fullmatch(r"[A-Za-z0-9+/]+", b64):
            raise ValueError("invalid modified UTF-7")
        try:
            utf16 = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            decoded = utf16.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError("invalid modified UTF-7") from exc
        out.append(decoded)
    return "".join(out)


def _normalize_mailbox(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name


# ---------------------------------------------------------------------------------------
# The command parser: one complete command (lines and literals) at a time


class _Reader:
    """Recursive descent over one complete command, literals inline after `{n}` CRLF."""

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.tag: str | None = None
        self.max_depth = max_depth
        self.depth = 0

    # -- failure and the smallest pieces

    def fail(self, text: str, code: Code | None = None) -> NoReturn:
        if self.tag is None:
            raise RemoteProtocolError(UntaggedStatus(Status.BAD, text, code))
        raise RemoteProtocolError(Tagged(self.tag, Status.BAD, text, code))

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def at(self, token: bytes) -> bool:
        return self.data.startswith(token, self.pos)

    def at_ci(self, token: bytes) -> bool:
        return self.data[self.pos : self.pos + len(token)].upper() == token

    def expect(self, token: bytes, what: str) -> None:
        if not self.at(token):
            self.fail(f"Expected {what}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        if self.pos != len(self.data) - 2 or not self.at(b"\r\n"):
            self.fail("Unexpected characters at the end of the command")
        self.pos += 2

    def take(self, chars: frozenset[int], what: str) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in chars:
            self.pos += 1
        if self.pos == start:
            self.fail(f"Expected {what}")
        return data[start : self.pos]

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            self.fail("Too deeply nested")

    def unnest(self) -> None:
        self.depth -= 1

    # -- the grammar's terminals

    def tag_(self) -> str:
        self.tag = self.take(_TAG_CHARS, "a tag").decode("ascii")
        return self.tag

    def atom(self) -> str:
        return self.take(_ATOM_CHARS, "an atom").decode("ascii")

    def number(self, *, nonzero: bool = False) -> int:
        digits = self.take(frozenset(b"0123456789"), "a number")
        value = int(digits) if len(digits) <= 10 else MAX_NUMBER + 1
        if value > MAX_NUMBER or (nonzero and value == 0):
            self.fail("Number out of range")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                self.fail("Unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:  # "
                return bytes(out)
            if c == 0x5C:  # backslash
                if self.pos >= len(data) or data[self.pos] not in (0x22, 0x5C):
                    self.fail("Invalid escape in quoted string")
                c = data[self.pos]
                self.pos += 1
            elif c in (0x0D, 0x0A):
                self.fail("Unterminated quoted string")
            elif c == 0x00:
                self.fail("Invalid character in quoted string")
            out.append(c)

    def literal(self) -> bytes:
        self.expect(b"{", "a literal")
        size = self.number()
        if self.at(b"+"):
            self.pos += 1
        self.expect(b"}\r\n", "} and CRLF after a literal size")
        if self.pos + size > len(self.data):
            self.fail("Literal is shorter than announced")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == 0x7B:
            return self.literal()
        self.fail("Expected a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.take(_ASTRING_CHARS, "an atom or string")

    def nstring_text(self) -> str | None:
        if self.at_ci(b"NIL"):
            self.pos += 3
            return None
        return self.utf8(self.string())

    def utf8(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("Strings must be UTF-8")

    def mailbox(self) -> str:
        raw = self.astring()
        try:
            return _normalize_mailbox(decode_mailbox(raw))
        except ValueError as exc:
            self.fail(f"Invalid mailbox name: {exc}")

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self.take(_LIST_CHARS, "a mailbox pattern")
        try:
            return decode_mailbox(raw)
        except ValueError as exc:
            self.fail(f"Invalid mailbox pattern: {exc}")

    def sequence_set(self) -> SequenceSet:
        text = self.take(_SEQ_CHARS, "a sequence set").decode("ascii")
        ranges: list[tuple[int | None, int | None]] = []
        for item in text.split(","):
            ends = item.split(":")
            if len(ends) > 2:
                self.fail("Invalid sequence set")
            values: list[int | None] = []
            for end in ends:
                if end == "*":
                    values.append(None)
                elif end.isdigit() and len(end) <= 10 and 0 < int(end) <= MAX_NUMBER:
                    values.append(int(end))
                else:
                    self.fail("Invalid sequence set")
            ranges.append((values[0], values[-1]))
        return SequenceSet(tuple(ranges))

    def flag(self) -> str:
        if self.at(b"\\"):
            self.pos += 1
            name = "\\" + self.atom()
            system = _SYSTEM_FLAGS.get(name.upper())
            if system is None:
                self.fail(f"Unknown or read-only system flag {name}")
            return system
        return self.atom()

    def flags(self) -> tuple[str, ...]:
        """flag-list `(a b)` or the bare `a b` that STORE also accepts."""
        flags: list[str] = []
        if self.at(b"("):
            self.pos += 1
            while not self.at(b")"):
                if flags:
                    self.sp()
                flags.append(self.flag())
            self.pos += 1
            return tuple(flags)
        flags.append(self.flag())
        while self.at(b" "):
            self.pos += 1
            flags.append(self.flag())
        return tuple(flags)

    def date_(self) -> date:
        quoted = self.at(b'"')
        if quoted:
            self.pos += 1
        m = _DATE.match(self.data, self.pos)
        if m is None:
            self.fail("Expected a date like 1-Feb-2024")
        month = _MONTHS.get(m[2].decode("ascii").upper())
        try:
            if month is None:
                raise ValueError("month")
            day = date(int(m[3]), month, int(m[1]))
        except ValueError:
            self.fail("Invalid date")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "a closing quote")
        return day

    # -- FETCH

    def fetch_attributes(self) -> tuple[FetchAttribute, ...]:
        if self.at(b"("):
            self.pos += 1
            items: list[FetchAttribute] = []
            while True:
                items.append(self.fetch_attribute())
                if self.at(b")"):
                    self.pos += 1
                    return tuple(items)
                self.sp()
        name = self.take(_FETCH_NAME_CHARS, "a fetch attribute").decode("ascii").upper()
        if name in _MACROS:
            return tuple(FetchAttribute(kind) for kind in _MACROS[name])
        self.pos -= len(name)
        return (self.fetch_attribute(),)

    def fetch_attribute(self) -> FetchAttribute:
        name = self.take(_FETCH_NAME_CHARS, "a fetch attribute").decode("ascii").upper()
        if name in ("BODY", "BODY.PEEK") and self.at(b"["):
            section = self.section()
            partial = None
            if self.at(b"<"):
                self.pos += 1
                origin = self.number()
                self.expect(b".", "'.' in a partial <origin.length>")
                length = self.number(nonzero=True)
                self.expect(b">", "'>' closing a partial")
                partial = (origin, length)
            return FetchAttribute(FetchKind.SECTION, section, partial, peek=name == "BODY.PEEK")
        if name == "BODY":
            return FetchAttribute(FetchKind.BODY)
        kind = _SIMPLE_ATTRIBUTES.get(name)
        if kind is None:
            self.fail(f"Unknown fetch attribute {name}")
        return FetchAttribute(kind)

    def section(self) -> Section:
        self.expect(b"[", "[")
        if self.at(b"]"):
            self.pos += 1
            return Section()
        spec = self.take(_SECTION_CHARS, "a section").decode("ascii").upper()
        pieces = spec.split(".")
        part: list[int] = []
        while pieces and pieces[0].isdigit():
            number = int(pieces.pop(0)) if len(pieces[0]) <= 10 else 0
            if not 0 < number <= MAX_NUMBER:
                self.fail("Invalid section part number")
            part.append(number)
        text: SectionText | None = None
        if pieces:
            try:
                text = SectionText(".".join(pieces))
            except ValueError:
                self.fail(f"Invalid section {spec}")
            if text is SectionText.MIME and not part:
                self.fail("MIME needs a part number")
        fields: list[str] = []
        if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
            self.sp()
            self.expect(b"(", "( starting a header list")
            while True:
                fields.append(self.utf8(self.astring()))
                if self.at(b")"):
                    self.pos += 1
                    break
                self.sp()
        self.expect(b"]", "] closing the section")
        return Section(tuple(part), text, tuple(fields))

    # -- SEARCH

    def search_program(self) -> tuple[str | None, SearchKey]:
        charset = None
        if self.at_ci(b"CHARSET "):
            self.pos += len(b"CHARSET ")
            charset = self.utf8(self.astring()).upper()
            self.sp()
        keys = [self.search_key()]
        while self.at(b" "):
            self.pos += 1
            keys.append(self.search_key())
        return charset, keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))

    def search_key(self) -> SearchKey:
        c = self.peek()
        if c == 0x28:  # (
            self.pos += 1
            self.nest()
            keys = [self.search_key()]
            while self.at(b" "):
                self.pos += 1
                keys.append(self.search_key())
            self.expect(b")", ") closing a search list")
            self.unnest()
            return SearchAnd(tuple(keys))
        if c == 0x2A or 0x30 <= c <= 0x39:
            return SearchSet(self.sequence_set(), uid=False)
        name = self.atom().upper()
        parse = _SEARCH_KEYS.get(name)
        if parse is None:
            self.fail(f"Unknown search key {name}")
        self.nest()
        key = parse(self)
        self.unnest()
        return key

    def search_argument(self) -> bytes:
        self.sp()
        return self.astring()


_FETCH_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_SECTION_CHARS = _FETCH_NAME_CHARS


def _flag_key(flag: str, present: bool) -> Callable[[_Reader], SearchKey]:
    return lambda r: SearchFlag(flag, present)


def _header_key(name: str) -> Callable[[_Reader], SearchKey]:
    return lambda r: SearchHeader(name, r.search_argument())


def _date_key(which: DateField, relation: DateRelation) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return SearchDate(which, relation, r.date_())

    return parse


def _keyword_key(present: bool) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return SearchFlag(r.atom(), present)

    return parse


def _size_key(larger: bool) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return SearchSize(larger, r.number())

    return parse


def _not_key(r: _Reader) -> SearchKey:
    r.sp()
    return SearchNot(r.search_key())


def _or_key(r: _Reader) -> SearchKey:
    r.sp()
    left = r.search_key()
    r.sp()
    return SearchOr(left, r.search_key())


def _uid_key(r: _Reader) -> SearchKey:
    r.sp()
    return SearchSet(r.sequence_set(), uid=True)


def _header_field_key(r: _Reader) -> SearchKey:
    r.sp()
    name = r.utf8(r.astring())
    return SearchHeader(name, r.search_argument())


_SEARCH_KEYS: dict[str, Callable[[_Reader], SearchKey]] = {
    "ALL": lambda r: SearchAll(),
    "NEW": lambda r: SearchAnd((SearchRecent(True), SearchFlag("\\Seen", False))),
    "OLD": lambda r: SearchRecent(False),
    "RECENT": lambda r: SearchRecent(True),
    "NOT": _not_key,
    "OR": _or_key,
    "UID": _uid_key,
    "KEYWORD": _keyword_key(True),
    "UNKEYWORD": _keyword_key(False),
    "LARGER": _size_key(True),
    "SMALLER": _size_key(False),
    "HEADER": _header_field_key,
    "BODY": lambda r: SearchText(r.search_argument(), with_headers=False),
    "TEXT": lambda r: SearchText(r.search_argument(), with_headers=True),
    **{
        name: _flag_key(flag, present)
        for flag in _SYSTEM_FLAGS.values()
        for name, present in ((flag[1:].upper(), True), ("UN" + flag[1:].upper(), False))
    },
    **{name: _header_key(name.capitalize()) for name in ("FROM", "TO", "CC", "BCC", "SUBJECT")},
    **{
        prefix + relation.name: _date_key(which, relation)
        for prefix, which in (("", DateField.INTERNAL), ("SENT", DateField.SENT))
        for relation in DateRelation
    },
}


# -- one parser per command: reader positioned after the command name


def _no_args(cls: type[Command]) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.end()
        return cls(tag)

    return parse


def _one_mailbox(cls: Callable[[str, str], Command]) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        mailbox = r.mailbox()
        r.end()
        return cls(tag, mailbox)

    return parse


def _list_like(cls: Callable[[str, str, str], Command]) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        raw = r.astring()
        try:
            reference = decode_mailbox(raw)
        except ValueError as exc:
            r.fail(f"Invalid reference name: {exc}")
        r.sp()
        pattern = r.list_mailbox()
        r.end()
        return cls(tag, reference, pattern)

    return parse


def _parse_login(r: _Reader, tag: str) -> Command:
    r.sp()
    userid = r.utf8(r.astring())
    r.sp()
    password = r.utf8(r.astring())
    r.end()
    return Login(tag, userid, password)


def _parse_authenticate(r: _Reader, tag: str) -> Command:
    r.sp()
    mechanism = r.atom().upper()
    initial: bytes | None = None
    if r.at(b" "):
        r.pos += 1
        token = r.take(_BASE64_CHARS, "a base64 initial response")
        if token == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(token, validate=True)
            except binascii.Error:
                r.fail("Invalid base64 in the initial response")
    r.end()
    return Authenticate(tag, mechanism, initial)


def _parse_id(r: _Reader, tag: str) -> Command:
    r.sp()
    if r.at_ci(b"NIL"):
        r.pos += 3
        r.end()
        return Id(tag, None)
    r.expect(b"(", "( or NIL")
    params: list[tuple[str, str | None]] = []
    while not r.at(b")"):
        if params:
            r.sp()
        key = r.utf8(r.string())
        r.sp()
        params.append((key, r.nstring_text()))
        if len(params) > 30:  # RFC 2971: at most 30 pairs
            r.fail("Too many ID parameters")
    r.pos += 1
    r.end()
    return Id(tag, tuple(params))


def _parse_enable(r: _Reader, tag: str) -> Command:
    capabilities: list[str] = []
    while r.at(b" "):
        r.pos += 1
        capabilities.append(r.atom().upper())
    if not capabilities:
        r.fail("ENABLE needs at least one capability")
    r.end()
    return Enable(tag, tuple(capabilities))


def _parse_rename(r: _Reader, tag: str) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    r.end()
    return Rename(tag, old, new)


def _parse_status(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    r.expect(b"(", "( starting the status items")
    items: list[str] = []
    while True:
        items.append(r.atom().upper())
        if r.at(b")"):
            r.pos += 1
            break
        r.sp()
    r.end()
    return StatusCommand(tag, mailbox, tuple(items))


def _parse_expunge(uid: bool) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        uids = None
        if uid:
            r.sp()
            uids = r.sequence_set()
        r.end()
        return Expunge(tag, uids)

    return parse


def _parse_search(uid: bool) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        charset, key = r.search_program()
        r.end()
        return Search(tag, key, charset, uid)

    return parse


def _parse_fetch(uid: bool) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        attributes = r.fetch_attributes()
        r.end()
        return Fetch(tag, sequence_set, attributes, uid)

    return parse


def _parse_store(uid: bool) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        item = r.take(_FETCH_NAME_CHARS | frozenset(b"+-"), "FLAGS, +FLAGS or -FLAGS")
        m = re.fullmatch(rb"([+-]?)FLAGS(\.SILENT)?", item.upper())
        if m is None:
            r.fail("Expected FLAGS, +FLAGS or -FLAGS")
        mode = {b"": FlagMode.REPLACE, b"+": FlagMode.ADD, b"-": FlagMode.REMOVE}[m[1]]
        r.sp()
        flags = r.flags()
        r.end()
        return Store(tag, sequence_set, mode, flags, silent=m[2] is not None, uid=uid)

    return parse


_COMMANDS: dict[str, Callable[[_Reader, str], Command]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTls),
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "ID": _parse_id,
    "ENABLE": _parse_enable,
    "NAMESPACE": _no_args(Namespace),
    "SELECT": _one_mailbox(Select),
    "EXAMINE": _one_mailbox(Examine),
    "CREATE": _one_mailbox(Create),
    "DELETE": _one_mailbox(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list_like(List),
    "LSUB": _list_like(Lsub),
    "STATUS": _parse_status,
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _parse_expunge(uid=False),
    "SEARCH": _parse_search(uid=False),
    "FETCH": _parse_fetch(uid=False),
    "STORE": _parse_store(uid=False),
    "UID EXPUNGE": _parse_expunge(uid=True),
    "UID SEARCH": _parse_search(uid=True),
    "UID FETCH": _parse_fetch(uid=True),
    "UID STORE": _parse_store(uid=True),
}


def _command_head(r: _Reader) -> str:
    """Read `tag SP name [SP subname]` for UID commands; return the command's table key."""
    r.tag_()
    r.sp()
    name = r.atom().upper()
    if name == "UID":
        r.sp()
        name = "UID " + r.atom().upper()
    return name


def parse_command(data: bytes, *, max_depth: int = 16) -> Command:
    """One complete command (its final CRLF included) to a typed event."""
    r = _Reader(data, max_depth)
    name = _command_head(r)
    parse = _COMMANDS.get(name)
    if parse is None:
        r.fail(f"Unknown command {name}")
    return parse(r, r.tag or "")


def _head_of(data: bytes) -> tuple[str | None, str]:
    """Best-effort tag and command name of a partial command, for early errors."""
    r = _Reader(data, 1)
    try:
        name = _command_head(r)
    except RemoteProtocolError:
        return r.tag, ""
    return r.tag, name


# ---------------------------------------------------------------------------------------
# The connection

_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}\r\n\Z")


@dataclass
class _Pending:
    """The command being assembled: its lines and literals so far."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    literal_left: int = 0


class ImapServerConnection:
    """One IMAP connection's framing, server side.

    Feed received octets with `receive_data` (b"" at end of stream) and pull events with
    `next_event`. Serialize every response with `send`, which also tracks what the client
    may send next: after a `Continuation` that is not the go-ahead for a literal, the next
    line is a `ContinuationLine` (SASL response), not a command.
    """

    def __init__(
        self,
        *,
        max_line: int = 65_536,
        max_literal: int = 65_536,
        max_command: int = 262_144,
        max_depth: int = 16,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self.max_depth = max_depth
        self._buffer = bytearray()
        self._scanned = 0  # no CRLF in buffer[:_scanned]
        self._pending = _Pending()
        self._awaiting_go_ahead = False
        self._expect_line = False
        self._eof = False
        self._broken = False

    # -- input

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("data received after the end of the stream")
        if data:
            self._buffer += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """Octets received but not yet consumed (nonzero after STARTTLS means injection)."""
        return len(self._buffer) + sum(map(len, self._pending.parts))

    def next_event(self) -> Event:
        if self._broken:
            raise LocalProtocolError("the connection failed fatally; close it")
        if self._awaiting_go_ahead:
            raise LocalProtocolError("send the literal's Continuation before reading on")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._pending = _Pending()
            if exc.fatal:
                self._broken = True
            raise

    def _idle(self) -> NeedData | ConnectionClosed:
        return ConnectionClosed() if self._eof else NeedData()

    def _next_event(self) -> Event:
        pending = self._pending
        while True:
            if pending.literal_left:
                if not self._buffer:
                    return self._idle()
                take = min(len(self._buffer), pending.literal_left)
                pending.parts.append(bytes(self._buffer[:take]))
                del self._buffer[:take]
                pending.literal_left -= take
                if pending.literal_left:
                    return self._idle()
                continue
            end = self._buffer.find(b"\r\n", self._scanned)
            if end < 0:
                if len(self._buffer) > self.max_line:
                    self._too_big("Command line too long", fatal=True)
                self._scanned = max(0, len(self._buffer) - 1)
                return self._idle()
            line = bytes(self._buffer[: end + 2])
            del self._buffer[: end + 2]
            self._scanned = 0
            if len(line) > self.max_line:
                self._too_big("Command line too long", fatal=True, line=line)
            if self._expect_line:
                self._expect_line = False
                return ContinuationLine(line[:-2])
            if not pending.parts and line == b"\r\n":
                continue
            pending.parts.append(line)
            pending.size += len(line)
            if pending.size > self.max_command:
                self._too_big("Command too long", fatal=True)
            m = _LITERAL_AT_END.search(line)
            if m is None:
                data = b"".join(pending.parts)
                self._pending = pending = _Pending()
                return parse_command(data, max_depth=self.max_depth)
            size, synchronizing = int(m[1]), not m[2]
            if size > self.max_literal or pending.size + size > self.max_command:
                self._too_big("Literal too large", fatal=not synchronizing)
            tag, name = _head_of(pending.parts[0])
            if synchronizing and (tag is None or name not in _COMMANDS):
                # Refuse before the client sends the literal, so the stream stays in step.
                if tag is None:
                    raise RemoteProtocolError(UntaggedStatus(Status.BAD, "Invalid tag"))
                raise RemoteProtocolError(Tagged(tag, Status.BAD, f"Unknown command {name}"))
            pending.literal_left = size
            pending.size += size
            if synchronizing:
                self._awaiting_go_ahead = True
                return LiteralContinuation(tag or "", name)

    def _too_big(self, text: str, *, fatal: bool, line: bytes | None = None) -> NoReturn:
        head = self._pending.parts[0] if self._pending.parts else (line or bytes(self._buffer))
        tag, _ = _head_of(head)
        code = Code("TOOBIG")
        if fatal:
            self._buffer.clear()
        if tag is None:
            raise RemoteProtocolError(UntaggedStatus(Status.BAD, text, code), fatal=fatal)
        raise RemoteProtocolError(Tagged(tag, Status.BAD, text, code), fatal=fatal)

    # -- output

    def send(self, response: Response) -> bytes:
        if isinstance(response, Continuation):
            if self._awaiting_go_ahead:
                self._awaiting_go_ahead = False
            else:
                self._expect_line = True
        return serialize(response)
