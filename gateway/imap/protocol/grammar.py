"""The IMAP grammar's productions over one complete command (literals inline).

Holds `Reader`: recursive descent with terminals (atom, string, literal, number,
mailbox, sequence set, flags, date), FETCH attributes and sections, SEARCH programs
(the key table `SEARCH_KEYS`). Every failure raises `RemoteProtocolError` with the
tagged BAD once the tag is known. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import NoReturn

from gateway.imap.protocol.chars import (
    ASTRING_CHARS,
    ATOM_CHARS,
    DATE,
    DATE_TIME,
    LIST_CHARS,
    MONTHS,
    SEQ_CHARS,
    SYSTEM_FLAG_NAMES,
    TAG_CHARS,
)
from gateway.imap.protocol.errors import LocalProtocolError, RemoteProtocolError
from gateway.imap.protocol.fetch_items import (
    MACROS,
    SIMPLE_ATTRIBUTES,
    FetchAttribute,
    FetchKind,
    Section,
    SectionText,
)
from gateway.imap.protocol.mutf7 import decode_mailbox, normalize_mailbox
from gateway.imap.protocol.responses import Code, Status, Tagged, UntaggedStatus
from gateway.imap.protocol.search_keys import (
    DateField,
    DateRelation,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModseq,
    SearchNot,
    SearchOr,
    SearchRecent,
    SearchSet,
    SearchSize,
    SearchText,
)
from gateway.imap.protocol.sequence import MAX_NUMBER, SequenceSet


class Reader:
    """Recursive descent over one complete command, literals inline after `{n}` CRLF, or
    given apart in `literals`, in order (the framing keeps them so: a message APPENDed is
    then never copied into, nor sliced out of, the command's text)."""

    def __init__(self, data: bytes, max_depth: int, literals: list[bytes] | None = None) -> None:
        self.data = data
        self.literals = literals
        self.pos = 0
        self.tag: str | None = None
        self.command: str | None = None  # the command's name once read, for error texts
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
            self.fail_at(f"Expected {what}")
        self.pos += len(token)

    def fail_at(self, text: str) -> NoReturn:
        """Fail at the current position, saying what is wrong there when that says more
        than `text`: the command ended early, or 8-bit octets outside a literal. Inside
        an unclosed parenthesised list `text` says more (what the list lacks)."""
        if (
            self.command is not None
            and self.pos == len(self.data) - 2
            and self.at(b"\r\n")
            and not self.in_list()
        ):
            self.fail(f"Incomplete {self.command} command: arguments are missing")
        if self.peek() >= 0x80:
            self.fail("8-bit characters must be sent in a literal")
        self.fail(text)

    def in_list(self) -> bool:
        """Whether a parenthesis before the current position is still open, outside
        quoted strings and literals. Only failures ask, so a rescan costs nothing."""
        data, i, open_ = self.data, 0, 0
        inline = self.literals is None
        while i < self.pos:
            c = data[i]
            if c == 0x22:  # a quoted string, to its closing quote
                i += 1
                while i < self.pos and data[i] != 0x22:
                    i += 2 if data[i] == 0x5C else 1
            elif c == 0x7B and inline:  # {n} or {n+} CRLF, then n octets
                close = data.find(b"}\r\n", i)
                size = data[i + 1 : close].rstrip(b"+")
                if close > 0 and size.isdigit():
                    i = close + 2 + int(size)
            elif c == 0x28:
                open_ += 1
            elif c == 0x29:
                open_ = max(open_ - 1, 0)
            i += 1
        return open_ > 0

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        if self.pos != len(self.data) - 2 or not self.at(b"\r\n"):
            self.fail_at("Unexpected characters at the end of the command")
        self.pos += 2

    def take(self, chars: frozenset[int], what: str) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in chars:
            self.pos += 1
        if self.pos == start:
            self.fail_at(f"Expected {what}")
        return data[start : self.pos]

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            self.fail("Too deeply nested")

    def unnest(self) -> None:
        self.depth -= 1

    # -- the grammar's terminals

    def tag_(self) -> str:
        self.tag = self.take(TAG_CHARS, "a tag").decode("ascii")
        return self.tag

    def atom(self) -> str:
        return self.take(ATOM_CHARS, "an atom").decode("ascii")

    def number(self, *, nonzero: bool = False) -> int:
        digits = self.take(frozenset(b"0123456789"), "a number")
        value = int(digits) if len(digits) <= 10 else MAX_NUMBER + 1
        if value > MAX_NUMBER or (nonzero and value == 0):
            self.fail("Number out of range")
        return value

    def number64(self) -> int:
        """number64 (RFC 9051): up to 2^63 - 1, as quota limits are."""
        digits = self.take(frozenset(b"0123456789"), "a number")
        if len(digits) > 19 or int(digits) >= 2**63:
            self.fail("Number out of range")
        return int(digits)

    def mod_sequence(self, *, zero: bool = False) -> int:
        """mod-sequence-value (RFC 7162 section 7): a positive 63-bit number; `zero`
        allows 0 too (mod-sequence-valzer)."""
        digits = self.take(frozenset(b"0123456789"), "a mod-sequence")
        value = int(digits) if len(digits) <= 19 else MAX_MODSEQ + 1
        if value > MAX_MODSEQ or (value == 0 and not zero):
            self.fail("Mod-sequence out of range")
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
        if self.literals is not None:
            if not self.literals or len(self.literals[0]) != size:
                raise LocalProtocolError("the framing's literals do not match the command")
            return self.literals.pop(0)
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
        return self.take(ASTRING_CHARS, "an atom or string")

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
            return normalize_mailbox(decode_mailbox(raw))
        except ValueError as exc:
            self.fail(f"Invalid mailbox name: {exc}")

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self.take(LIST_CHARS, "a mailbox pattern")
        try:
            return decode_mailbox(raw)
        except ValueError as exc:
            self.fail(f"Invalid mailbox pattern: {exc}")

    def sequence_set(self) -> SequenceSet:
        text = self.take(SEQ_CHARS, "a sequence set").decode("ascii")
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
            system = SYSTEM_FLAG_NAMES.get(name.upper())
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
        m = DATE.match(self.data, self.pos)
        if m is None:
            self.fail("Expected a date like 1-Feb-2024")
        month = MONTHS.get(m[2].decode("ascii").upper())
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

    def date_time(self) -> datetime:
        """`"17-Jul-1996 02:44:25 -0700"` (APPEND's INTERNALDATE), timezone-aware."""
        m = DATE_TIME.match(self.data, self.pos)
        if m is None:
            self.fail('Expected a date-time like "1-Feb-2024 12:00:00 +0100"')
        month = MONTHS.get(m[2].decode("ascii").upper())
        hours, minutes = int(m[8]), int(m[9])
        try:
            if month is None or hours > 23 or minutes > 59:
                raise ValueError("month or zone")
            offset = timedelta(hours=hours, minutes=minutes) * (-1 if m[7] == b"-" else 1)
            value = datetime(
                int(m[3]), month, int(m[1]), int(m[4]), int(m[5]), int(m[6]),
                tzinfo=timezone(offset),
            )
        except ValueError:
            self.fail("Invalid date-time")
        self.pos = m.end()
        return value

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
        name = self.take(FETCH_NAME_CHARS, "a fetch attribute").decode("ascii").upper()
        if name in MACROS:
            return tuple(FetchAttribute(kind) for kind in MACROS[name])
        self.pos -= len(name)
        return (self.fetch_attribute(),)

    def fetch_attribute(self) -> FetchAttribute:
        name = self.take(FETCH_NAME_CHARS, "a fetch attribute").decode("ascii").upper()
        if name in ("BODY", "BODY.PEEK") and self.at(b"["):
            section = self.section()
            partial = self.partial() if self.at(b"<") else None
            return FetchAttribute(FetchKind.SECTION, section, partial, peek=name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            return self.binary_attribute(name)
        if name == "BODY":
            return FetchAttribute(FetchKind.BODY)
        kind = SIMPLE_ATTRIBUTES.get(name)
        if kind is None:
            self.fail(f"Unknown fetch attribute {name}")
        return FetchAttribute(kind)

    def partial(self) -> tuple[int, int]:
        self.expect(b"<", "'<' opening a partial")
        origin = self.number()
        self.expect(b".", "'.' in a partial <origin.length>")
        length = self.number(nonzero=True)
        self.expect(b">", "'>' closing a partial")
        return origin, length

    def binary_attribute(self, name: str) -> FetchAttribute:
        """BINARY[part]<partial>, BINARY.PEEK[...], BINARY.SIZE[part] (RFC 3516): a part
        number only (section-binary), no HEADER, TEXT or MIME."""
        if not self.at(b"["):
            self.fail(f"{name} needs a section such as [1]")
        section = self.section()
        if section.text is not None:
            self.fail(f"{name} takes a part number only")
        if name == "BINARY.SIZE":
            return FetchAttribute(FetchKind.BINARY_SIZE, section)
        partial = self.partial() if self.at(b"<") else None
        return FetchAttribute(FetchKind.BINARY, section, partial, peek=name == "BINARY.PEEK")

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
        parse = SEARCH_KEYS.get(name)
        if parse is None:
            self.fail(f"Unknown search key {name}")
        self.nest()
        key = parse(self)
        self.unnest()
        return key

    def search_argument(self) -> bytes:
        self.sp()
        return self.astring()


MAX_MODSEQ = 2**63 - 1
FETCH_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_SECTION_CHARS = FETCH_NAME_CHARS


def _flag_key(flag: str, present: bool) -> Callable[[Reader], SearchKey]:
    return lambda r: SearchFlag(flag, present)


def _header_key(name: str) -> Callable[[Reader], SearchKey]:
    return lambda r: SearchHeader(name, r.search_argument())


def _date_key(which: DateField, relation: DateRelation) -> Callable[[Reader], SearchKey]:
    def parse(r: Reader) -> SearchKey:
        r.sp()
        return SearchDate(which, relation, r.date_())

    return parse


def _keyword_key(present: bool) -> Callable[[Reader], SearchKey]:
    def parse(r: Reader) -> SearchKey:
        r.sp()
        return SearchFlag(r.atom(), present)

    return parse


def _size_key(larger: bool) -> Callable[[Reader], SearchKey]:
    def parse(r: Reader) -> SearchKey:
        r.sp()
        return SearchSize(larger, r.number())

    return parse


def _not_key(r: Reader) -> SearchKey:
    r.sp()
    return SearchNot(r.search_key())


def _or_key(r: Reader) -> SearchKey:
    r.sp()
    left = r.search_key()
    r.sp()
    return SearchOr(left, r.search_key())


def _uid_key(r: Reader) -> SearchKey:
    r.sp()
    return SearchSet(r.sequence_set(), uid=True)


def _modseq_key(r: Reader) -> SearchKey:
    """MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 section 3.1.5)."""
    r.sp()
    if r.at(b'"'):
        r.quoted()  # entry-name: this server keeps one modseq per message
        r.sp()
        entry_type = r.atom().upper()
        if entry_type not in ("PRIV", "SHARED", "ALL"):
            r.fail("Expected priv, shared or all after the MODSEQ entry name")
        r.sp()
    return SearchModseq(r.mod_sequence(zero=True))


def _header_field_key(r: Reader) -> SearchKey:
    r.sp()
    name = r.utf8(r.astring())
    return SearchHeader(name, r.search_argument())


SEARCH_KEYS: dict[str, Callable[[Reader], SearchKey]] = {
    "ALL": lambda r: SearchAll(),
    "NEW": lambda r: SearchAnd((SearchRecent(True), SearchFlag("\\Seen", False))),
    "OLD": lambda r: SearchRecent(False),
    "RECENT": lambda r: SearchRecent(True),
    "NOT": _not_key,
    "OR": _or_key,
    "UID": _uid_key,
    "MODSEQ": _modseq_key,
    "KEYWORD": _keyword_key(True),
    "UNKEYWORD": _keyword_key(False),
    "LARGER": _size_key(True),
    "SMALLER": _size_key(False),
    "HEADER": _header_field_key,
    "BODY": lambda r: SearchText(r.search_argument(), with_headers=False),
    "TEXT": lambda r: SearchText(r.search_argument(), with_headers=True),
    **{
        name: _flag_key(flag, present)
        for flag in SYSTEM_FLAG_NAMES.values()
        for name, present in ((flag[1:].upper(), True), ("UN" + flag[1:].upper(), False))
    },
    **{name: _header_key(name.capitalize()) for name in ("FROM", "TO", "CC", "BCC", "SUBJECT")},
    **{
        prefix + relation.name: _date_key(which, relation)
        for prefix, which in (("", DateField.INTERNAL), ("SENT", DateField.SENT))
        for relation in DateRelation
    },
}
