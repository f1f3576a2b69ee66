"""The SMTP connection cap: at most `limit` connections at once, counted down on close.

`ConnectionCap.protocol_factory` wraps the factory given to `loop.create_server`:
while `limit` connections are open, a new one is answered `421 4.7.0` and closed
without reaching aiosmtpd. A connection's slot is taken when its protocol is made
(before any byte is read, so a burst of connects cannot overshoot) and given back in
`connection_lost` of `CappedSubmissionSMTP` (or `CappedInboundSMTP`), which survives
STARTTLS (aiosmtpd keeps the same protocol object under the TLS transport).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP

from gateway.smtp.inbound import InboundSMTP
from gateway.smtp.server import SubmissionSMTP

TOO_MANY = b"421 4.7.0 Too many connections, try again later\r\n"


class ConnectionCap:
    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the connection limit must be positive")
        self.limit = limit
        self.open = 0

    def protocol_factory(
        self, make: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """A factory that calls `make` while a slot is free, and refuses otherwise.

        `make` must return a protocol that calls `release` once when its connection is lost.
        """

        def factory() -> asyncio.BaseProtocol:
            if self.open >= self.limit:
                return _Refusal()
            self.open += 1
            try:
                return make()
            except BaseException:
                self.open -= 1
                raise

        return factory

    def release(self) -> None:
        self.open -= 1


class _GivesSlotBack(SMTP):
    """An SMTP session that gives its slot back once its connection is gone."""

    def __init__(self, handler: Any, *, cap: ConnectionCap, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._cap: ConnectionCap | None = cap

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None  # once only, however the transport ended


class CappedSubmissionSMTP(_GivesSlotBack, SubmissionSMTP):
    """A submission session under a `ConnectionCap`."""


class CappedInboundSMTP(_GivesSlotBack, InboundSMTP):
    """An inbound session under a `ConnectionCap`."""


class _Refusal(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 - a TCP transport
        transport.write(TOO_MANY)
        transport.close()
