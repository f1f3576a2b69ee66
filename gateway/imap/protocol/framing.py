"""IMAP framing, server side, sans-I/O: octets in, events out; responses out as octets.

Holds `ImapServerConnection`: command lines and literals (synchronizing `{n}` and
`LITERAL+` `{n+}`) assembled under the limits given to the constructor, then parsed by
`parse_command` (APPEND's message literal has its own limit, `max_append`, and does not
count toward `max_command`); and line mode: after a `+` that is not a literal's go-ahead (a SASL
challenge, IDLE's "idling") the next line is a `ContinuationLine` (the SASL response,
IDLE's DONE), however many untagged responses go out meanwhile.

Literals are kept apart from the command's lines and handed to the parser as they are,
each gathered in a `BytesIO` whose value is taken without a copy: a 40 MB APPEND costs
about 40 MB here, not a list of chunks plus their join plus the parser's slice.

Fuzz rule: whatever bytes arrive, `next_event` returns an event or raises
`RemoteProtocolError`; nothing else. It never imports asyncio and never touches a socket.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import NoReturn

from gateway.imap.protocol.errors import LocalProtocolError, RemoteProtocolError
from gateway.imap.protocol.events import (
    ConnectionClosed,
    ContinuationLine,
    Event,
    LiteralContinuation,
    NeedData,
)
from gateway.imap.protocol.parse import PARSERS, head_of, parse_command
from gateway.imap.protocol.responses import (
    Code,
    Continuation,
    Response,
    Status,
    Tagged,
    UntaggedStatus,
)
from gateway.imap.protocol.serialize import serialize

_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}\r\n\Z")


@dataclass
class _Pending:
    """The command being assembled: its lines and literals so far."""

    lines: list[bytes] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)
    literal: io.BytesIO | None = None  # the one being received
    size: int = 0
    literal_left: int = 0
    limit: int = 0  # octets the whole command may take, once its first line is known

    @property
    def held(self) -> int:
        receiving = self.literal.tell() if self.literal is not None else 0
        return sum(map(len, self.lines)) + sum(map(len, self.literals)) + receiving


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
        max_append: int | None = None,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self.max_append = max_literal if max_append is None else max_append
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
        return len(self._buffer) + self._pending.held

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
                if pending.literal is None:
                    pending.literal = io.BytesIO()
                with memoryview(self._buffer) as view:
                    pending.literal.write(view[:take])
                del self._buffer[:take]
                pending.literal_left -= take
                if pending.literal_left:
                    return self._idle()
                pending.literals.append(pending.literal.getvalue())  # no copy: sole owner
                pending.literal = None
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
            if not pending.lines and line == b"\r\n":
                continue
            first = not pending.lines
            pending.lines.append(line)
            pending.size += len(line)
            tag, name = head_of(pending.lines[0])
            appending = name == "APPEND"
            if first:
                pending.limit = self.max_command + (self.max_append if appending else 0)
            if pending.size > pending.limit:
                self._too_big("Command too long", fatal=True)
            m = _LITERAL_AT_END.search(line)
            if m is None:
                data, literals = b"".join(pending.lines), pending.literals
                self._pending = pending = _Pending()
                return parse_command(data, max_depth=self.max_depth, literals=literals)
            size, synchronizing = int(m[1]), not m[2]
            largest = self.max_append if appending else self.max_literal
            if size > largest or pending.size + size > pending.limit:
                if appending and synchronizing and tag is not None:
                    # Refused before the client sends it (RFC 7889): the stream stays in step.
                    text = f"Messages are limited to {self.max_append} octets"
                    raise RemoteProtocolError(Tagged(tag, Status.NO, text, Code("TOOBIG")))
                self._too_big("Literal too large", fatal=not synchronizing)
            if synchronizing and (tag is None or name not in PARSERS):
                # Refuse before the client sends the literal, so the stream stays in step.
                if tag is None:
                    raise RemoteProtocolError(UntaggedStatus(Status.BAD, "Invalid tag"))
                raise RemoteProtocolError(Tagged(tag, Status.BAD, f"Unknown command {name}"))
            if size == 0:
                pending.literals.append(b"")
            pending.literal_left = size
            pending.size += size
            if synchronizing:
                self._awaiting_go_ahead = True
                return LiteralContinuation(tag or "", name)

    def _too_big(self, text: str, *, fatal: bool, line: bytes | None = None) -> NoReturn:
        head = self._pending.lines[0] if self._pending.lines else (line or bytes(self._buffer))
        tag, _ = head_of(head)
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
