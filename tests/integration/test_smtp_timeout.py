"""The SMTP session timeout counts silence, over real sockets: a session that keeps
talking (commands, or the chunks of a slow DATA) lives past the timeout; one that says
nothing for the timeout is closed. The protocol object is the gateway's own
(`GatewaySMTP`), on a listener in this process, with a handler that accepts any message.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiosmtpd.smtp import Envelope, Session

from gateway.smtp.server import GatewaySMTP

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
STEP = 0.2  # far inside the timeout: a loaded machine does not make the session look silent


class AcceptAll:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.messages.append(envelope.original_content)
        return "250 2.0.0 OK"


async def _session(
    talk: object,
) -> tuple[float, bytes, AcceptAll]:
    """Run `talk(reader, writer)` on a fresh connection; then wait for the server to close
    it. Returns the seconds from the end of `talk` to the close, what the server said
    after `talk`, and the handler."""
    handler = AcceptAll()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: GatewaySMTP(handler, timeout=TIMEOUT, auth_required=False,
                            auth_require_tls=False),
        "127.0.0.1", 0,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        await talk(reader, writer)  # type: ignore[operator]
        quiet_from = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), timeout=10 * TIMEOUT)
        writer.close()
        return time.monotonic() - quiet_from, rest, handler
    finally:
        server.close()
        await server.wait_closed()


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   line: bytes) -> bytes:
    writer.write(line + b"\r\n")
    await writer.drain()
    reply = await reader.readline()
    while reply[3:4] == b"-":
        reply = await reader.readline()
    return reply


def test_a_session_that_keeps_sending_commands_outlives_the_timeout() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert (await _command(reader, writer, b"EHLO client.example")).startswith(b"250 ")
        started = time.monotonic()
        while time.monotonic() - started < 2 * TIMEOUT:
            assert (await _command(reader, writer, b"NOOP")).startswith(b"250 ")
            await asyncio.sleep(STEP)

    silent, rest, _ = asyncio.run(_session(talk))
    assert rest == b""  # closed without a word, as aiosmtpd closes a timed-out session
    assert TIMEOUT - 2 * STEP <= silent < 4 * TIMEOUT


def test_a_slow_data_upload_is_not_cut_while_its_chunks_come() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for line in (b"EHLO client.example", b"MAIL FROM:<a@example.org>",
                     b"RCPT TO:<b@example.org>"):
            assert (await _command(reader, writer, line)).startswith(b"250 ")
        assert (await _command(reader, writer, b"DATA")).startswith(b"354 ")
        writer.write(b"Subject: slow\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 2 * TIMEOUT:
            writer.write(b"a line of a slow upload\r\n")
            await writer.drain()
            await asyncio.sleep(STEP)
        assert (await _command(reader, writer, b".")).startswith(b"250 ")

    silent, _, handler = asyncio.run(_session(talk))
    assert len(handler.messages) == 1
    assert handler.messages[0].startswith(b"Subject: slow\r\n\r\na line of a slow upload\r\n")
    assert TIMEOUT - 2 * STEP <= silent < 4 * TIMEOUT


def test_a_silent_session_is_closed_after_the_timeout() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert (await _command(reader, writer, b"EHLO client.example")).startswith(b"250 ")

    silent, rest, _ = asyncio.run(_session(talk))
    assert rest == b""
    assert TIMEOUT - 2 * STEP <= silent < 4 * TIMEOUT
