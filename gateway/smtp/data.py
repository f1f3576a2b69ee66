"""The content of an SMTP DATA command, taken from the wire in chunks: bytes in, bytes out.

`DataReader` is fed whatever the socket gave, in any pieces, and says when DATA has
ended. It keeps the rules of aiosmtpd's own line-by-line reader, so that the wire
behaves the same, only without a Python step per line:

- DATA ends only at CR LF "." CR LF (RFC 5321 section 4.1.1.4); the CR LF ending the
  DATA command line counts, so a first line "." is an empty message. A "." after a
  bare LF (`\\n.\\r\\n`, `\\n.\\n`) or a bare CR is body text: the SMTP smuggling of
  2023 needs a server that ends DATA there, and this one never does.
- Dot-stuffing (section 4.5.2): the first "." of every line (a line starts after
  CR LF) is removed.
- More than `size_limit` octets (counted before unstuffing, as aiosmtpd counts them)
  is `TOO_MUCH`; a line longer than `line_limit` octets with its CR LF is `TOO_LONG`.
  Either way the rest of DATA is read and dropped (the reply comes after the end,
  RFC 5321 section 4.2.5); at most `size_limit` plus one chunk is held in memory.

What follows the end of DATA in the last chunk (a pipelined command) is `leftover`,
for the caller to hand back to the command reader. Never imports asyncio.
"""

from __future__ import annotations

import enum

END = b"\r\n.\r\n"
_CRLF = b"\r\n"


class DataState(enum.Enum):
    NOMINAL = "nominal"
    TOO_MUCH = "too much"  # 552
    TOO_LONG = "too long"  # 500


class DataReader:
    def __init__(self, *, size_limit: int | None, line_limit: int) -> None:
        self._size_limit = size_limit
        self._line_limit = line_limit
        # Starts with the CR LF of the DATA command line, so a first line "." ends DATA.
        self._buffer = bytearray(_CRLF)
        self.state = DataState.NOMINAL
        self.done = False
        self.leftover = b""
        self._content: bytes | None = None

    def feed(self, chunk: bytes) -> bool:
        """Take the next bytes of the stream; True once DATA has ended (feed no more)."""
        if self.done:
            raise RuntimeError("DATA has ended; the rest belongs to the command reader")
        buffer = self._buffer
        start = max(0, len(buffer) - len(END) + 1)  # an end may straddle the old bytes
        buffer += chunk
        end = buffer.find(END, start)
        if end < 0:
            # The end, when it comes, starts at len(buffer) - 4 or later: the content
            # is longer than what is here less the CR LF prefix and a partial end.
            if self._over(len(buffer) - len(_CRLF) - (len(END) - 1)):
                self.state = DataState.TOO_MUCH
            if self.state is not DataState.NOMINAL:
                del buffer[: len(buffer) - (len(END) - 1)]  # drop; keep what may start an end
            return False
        self.done = True
        self.leftover = bytes(buffer[end + len(END) :])
        del buffer[end + len(_CRLF) :]  # keep the last line's CR LF
        if self.state is DataState.NOMINAL:
            if self._over(len(buffer) - len(_CRLF)):
                self.state = DataState.TOO_MUCH
            elif has_long_line(buffer, self._line_limit):
                self.state = DataState.TOO_LONG
        if self.state is DataState.NOMINAL:
            self._content = bytes(buffer).replace(b"\r\n.", _CRLF)[len(_CRLF) :]
        self._buffer = bytearray()
        return True

    @property
    def content(self) -> bytes:
        """The message, unstuffed, each line ending in CR LF; only when done and NOMINAL."""
        if self._content is None:
            raise RuntimeError("no content: DATA has not ended, or was over a limit")
        return self._content

    def _over(self, size: int) -> bool:
        return bool(self._size_limit) and size > (self._size_limit or 0)


def has_long_line(buffer: bytes | bytearray, limit: int) -> bool:
    """Whether a line of `buffer` (split at CR LF), its CR LF counted, is longer than
    `limit` octets: one C search per `limit` octets, not an object per line. From a line
    start, the last CR LF that a line of at most `limit` octets could end with is found;
    none means the line there is too long, else every line up to it is short enough."""
    pos, end = 0, len(buffer)
    while end - pos > limit - len(_CRLF):  # a line from here could be too long
        crlf = buffer.rfind(_CRLF, pos, pos + limit)
        if crlf < 0:
            return True
        pos = crlf + len(_CRLF)
    return False
