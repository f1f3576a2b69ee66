"""aioimaplib's client, but the answer to a bulk FETCH goes to a linear reader.

`Client` is `aioimaplib.IMAP4` with one change: while a `BulkFetch` is pending,
its protocol feeds the bytes it receives to the command's `fetch_wire.FetchReader`
instead of aioimaplib's line handling (which rescans the answer after each line),
and completes the command when the reader has the tagged line; bytes after it go
back to aioimaplib. Every other command, the connection, TLS and the login are
aioimaplib's own. A FETCH answer that breaks IMAP's syntax or the reader's limits
fails the command with a one-line `SourceError` and drops the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aioimaplib

from gateway.migrate.errors import SourceError
from gateway.migrate.fetch_wire import FetchReader, FetchWireError


class BulkFetch(aioimaplib.Command):  # type: ignore[misc]  # aioimaplib has no types
    """A UID FETCH whose answer `_Protocol` feeds to a `FetchReader`."""

    def __init__(self, tag: str, uids: str, items: str, *, max_literal: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__("FETCH", tag, uids, items, prefix="UID", loop=loop)
        self.reader = FetchReader(tag, max_literal=max_literal)
        self.error: SourceError | None = None

    async def wait(self) -> None:
        await super().wait()
        if self.error is not None:
            raise self.error


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, but the answer to a `BulkFetch` goes to its reader."""

    def data_received(self, d: bytes) -> None:
        command = self.pending_async_commands.get("FETCH")
        if not isinstance(command, BulkFetch):
            super().data_received(d)
            return
        pending = bytes(getattr(self, "incomplete_line", b""))
        if pending:  # a partial line that came before the command
            d, self.incomplete_line, self.current_command = pending + d, b"", None
        try:
            rest = command.reader.feed(d)
        except FetchWireError as e:
            self.pending_async_commands.pop("FETCH")
            command.error = SourceError(f"the server's FETCH answer is not IMAP: {e}")
            command.close(b"", "BAD")
            if self.transport is not None:
                self.transport.abort()  # the rest of the stream cannot be read
            return
        if command.reader.result is not None:
            self.pending_async_commands.pop("FETCH")
            result, text = command.reader.result
            command.close(text, result)
            if rest:
                super().data_received(rest)


class Client(aioimaplib.IMAP4):  # type: ignore[misc]
    def create_client(
        self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(local_loop.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context))
