"""The answer to one bulk UID FETCH, parsed as its bytes arrive (sans-I/O, linear).

aioimaplib, the migration's IMAP client, splits an answer into lines by copying
what is left after each line and, for FETCH, rescans every line received so far
after each one: its work grows with the square of a batch. The migration keeps
aioimaplib for the connection, the login and every other command, and hands the
bytes of its own bulk FETCH to this reader (`gateway.migrate.imap`), which looks at
each byte a bounded number of times:

    reader = FetchReader(tag, max_literal=..., max_line=...)
    rest = reader.feed(data)      # b"" until the tagged line, then what follows it
    reader.messages               # seq -> FetchedMessage (items merged per message)
    reader.result                 # ("OK" | "NO" | "BAD", text) once done

A response is a line, or lines joined by literals (`{N}` CRLF and N octets).
Untagged responses other than FETCH (EXISTS, EXPUNGE, OK) are skipped, but the
text of a BYE is kept (a server may hang up on a message it cannot read). Of a FETCH
response the reader keeps UID, FLAGS, INTERNALDATE (`internal_date` parses it),
RFC822.SIZE and the BODY[] octets (a literal, a quoted string or NIL). A line
longer than `max_line` or a literal longer than `max_literal` raises
`FetchWireError`: the peer misbehaved.
This module does no I/O, imports no asyncio and never logs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

_LITERAL_END = re.compile(rb"\{(\d{1,12})\}$")
_FETCH = re.compile(rb"\* (\d+) FETCH \(")
_UID = re.compile(rb"[( ]UID (\d+)")
_FLAGS = re.compile(rb"[( ]FLAGS \(([^)]*)\)")
_DATE = re.compile(rb'[( ]INTERNALDATE "([^"]*)"')
_SIZE = re.compile(rb"[( ]RFC822\.SIZE (\d+)")
_BODY = re.compile(rb'[( ]BODY\[\](?:<\d+>)? (?:(\{\d+\})$|NIL|"((?:\\.|[^"\\])*)")')
_QUOTED_PAIR = re.compile(rb"\\(.)")
_DATE_TIME = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {name: n for n, name in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
     b"dec"), 1)}


class FetchWireError(Exception):
    """The server's answer breaks IMAP's syntax or the reader's limits."""


@dataclass
class FetchedMessage:
    uid: int | None = None
    flags: bytes | None = None  # the FLAGS list's inside, as sent
    internal_date: bytes | None = None
    size: int | None = None
    body: bytes | None = None


@dataclass
class FetchReader:
    tag: str
    max_literal: int
    max_line: int = 1 << 20
    messages: dict[int, FetchedMessage] = field(default_factory=dict)
    result: tuple[str, bytes] | None = None
    bye: bytes | None = None  # the text of a BYE the server sent meanwhile
    _buffer: bytearray = field(default_factory=bytearray)
    _parts: list[bytes] = field(default_factory=list)  # lines of the response so far
    _literals: list[bytes] = field(default_factory=list)  # its literals (one per part but the last)
    _literal: int = -1  # octets of the literal awaited, -1: a line is

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes; once the tagged line is in, the bytes after it."""
        if self.result is not None:
            return data
        buffer = self._buffer
        buffer += data
        at = 0
        while self.result is None:
            if self._literal >= 0:
                if len(buffer) - at < self._literal:
                    break
                with memoryview(buffer) as view:  # one copy, not two
                    self._literals.append(bytes(view[at : at + self._literal]))
                at += self._literal
                self._literal = -1
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                if len(buffer) - at > self.max_line:
                    raise FetchWireError(f"a line of the FETCH answer over {self.max_line} octets")
                break
            if end - at > self.max_line:
                raise FetchWireError(f"a line of the FETCH answer over {self.max_line} octets")
            line = bytes(buffer[at:end])
            at = end + 2
            self._parts.append(line)
            literal = _LITERAL_END.search(line) if line.endswith(b"}") else None
            if literal is not None:
                self._literal = int(literal.group(1))
                if self._literal > self.max_literal:
                    raise FetchWireError(f"a literal of {self._literal} octets in the FETCH "
                                         f"answer (at most {self.max_literal} asked)")
                continue
            self._response(self._parts, self._literals)
            self._parts, self._literals = [], []
        if self.result is not None:
            rest = bytes(buffer[at:])
            buffer.clear()
            return rest
        del buffer[:at]
        return b""

    def _response(self, parts: list[bytes], literals: list[bytes]) -> None:
        first = parts[0]
        if not first.startswith(b"*"):
            tag, _, status = first.partition(b" ")
            if tag.decode("ascii", "replace") == self.tag:
                result, _, text = status.partition(b" ")
                self.result = (result.decode("ascii", "replace").upper(), text)
            return  # a continuation or another tag: nothing a FETCH waits for
        fetch = _FETCH.match(first)
        if fetch is None:
            if first[:6].upper() == b"* BYE ":
                self.bye = first[6:]
            return
        message = self.messages.setdefault(int(fetch.group(1)), FetchedMessage())
        for index, part in enumerate(parts):
            self._items(message, part, literals[index] if index < len(literals) else None)

    @staticmethod
    def _items(message: FetchedMessage, part: bytes, literal: bytes | None) -> None:
        """The items of one line of a FETCH response; `literal` follows the line."""
        if (uid := _UID.search(part)) is not None:
            message.uid = int(uid.group(1))
        if (flags := _FLAGS.search(part)) is not None:
            message.flags = flags.group(1)
        if (date := _DATE.search(part)) is not None:
            message.internal_date = date.group(1)
        if (size := _SIZE.search(part)) is not None:
            message.size = int(size.group(1))
        if (body := _BODY.search(part)) is not None:
            if body.group(1) is not None:
                message.body = literal
            elif body.group(2) is not None:
                message.body = _QUOTED_PAIR.sub(rb"\1", body.group(2))
            # NIL: the server has no body for it; `body` stays None


def internal_date(raw: bytes) -> datetime | None:
    """An INTERNALDATE (`d-Mon-yyyy hh:mm:ss +zzzz`, RFC 3501 date-time), or None if
    it is not one. strptime would cost five times as much a message."""
    match = _DATE_TIME.fullmatch(raw.strip())
    if match is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    try:
        return datetime(int(year), number, int(day), int(hour), int(minute), int(second),
                        tzinfo=_zone(sign == b"-", int(zone_h), int(zone_m)))
    except ValueError:  # 31-Feb, 25:00, a zone of 24 hours
        return None


@functools.lru_cache(maxsize=64)
def _zone(west: bool, hours: int, minutes: int) -> timezone:
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if west else offset)
