"""The relay's connection cap: at most `limit` connections open at once.

`ConnectionCap.protocol_factory` wraps the protocol factory handed to
`loop.create_server` (aiohttp's `web.Server`). While `limit` connections are open, a
new one gets `503` with a one-line JSON error and `Connection: close`, without
reaching aiohttp, and is closed once the answer is written; the connections already
open are served as before. A slot is taken when the protocol is made (before any byte
is read, so a burst of connects cannot overshoot) and given back when the connection
is lost. Held listings (`?wait=`) count like any connection.

This module holds no request data and logs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_LINGER = 2.0  # seconds a refused connection stays open for its answer to be read
_BODY = b'{"error": "too many connections"}'
TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode("ascii") + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + _BODY
)


class ConnectionCap:
    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the connection limit must be positive")
        self.limit = limit
        self.open = 0

    def protocol_factory(
        self, make: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """A factory that calls `make` while a slot is free, and refuses otherwise."""

        def factory() -> asyncio.BaseProtocol:
            if self.open >= self.limit:
                return _Refusal()
            self.open += 1
            try:
                return _Counted(make(), self)
            except BaseException:
                self.open -= 1
                raise

        return factory


class _Counted(asyncio.Protocol):
    """Passes every event to the real protocol and gives the slot back once, at the end."""

    def __init__(self, inner: asyncio.BaseProtocol, cap: ConnectionCap) -> None:
        if not isinstance(inner, asyncio.Protocol):
            raise TypeError("the capped protocol must be an asyncio.Protocol")
        self._inner = inner
        self._cap: ConnectionCap | None = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            if self._cap is not None:
                self._cap.open -= 1
                self._cap = None


class _Refusal(asyncio.Protocol):
    """Answers 503 at once, reads and drops what the client sends, and closes once the
    client has read the answer (its end closes) or after `_LINGER` seconds. Closing with
    unread bytes would reset the connection and could lose the answer."""

    _transport: asyncio.WriteTransport | None = None
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 - a TCP transport
        self._transport = transport
        transport.write(TOO_MANY)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is refused unread

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
