"""Each relay route applies its own body limit before reading, also to chunked bodies.

A relay process (`sealgate relay serve`) gets 64 MiB chunked bodies on routes that
take a tiny signed query or a directory record, and on routes that take none; it
must answer (413, or the route's answer) while the client is still sending, and
without its memory growing by the body. The `max_query_bytes` setting is overflowed
on an in-process relay with a correctly signed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bridge.directory import LOOKUP_ID_LEN
from bridge.envelope import ENVELOPE_ID_LEN
from bridge.keys import MAILBOX_ID_LEN, AccountKeys, RootKey
from bridge.relay.auth import sign_request
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from tests.bubble_processes import Bubble

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BODY = 64 * MiB
CHUNK = 64 * 1024


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def chunked_upload(port: int, method: str, path: str, total: int) -> tuple[bytes, int]:
    """Send `total` bytes as a chunked body, stopping once an answer arrives.

    Returns the status line and how many body bytes were sent before it came.
    """
    frame = b"%x\r\n" % CHUNK + bytes(CHUNK) + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += CHUNK
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        status = sock.makefile("rb").readline()
    return status, sent


@pytest.fixture(scope="module")
def relay_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    bubble = Bubble(tmp_path_factory.mktemp("relay"))
    try:
        bubble.init()
        yield bubble
        assert bubble.stop_all()["relay"] == 0  # and it still shuts down cleanly
    finally:
        bubble.kill_all()


MAILBOX = f"/v1/mailboxes/{'cd' * MAILBOX_ID_LEN}/envelopes"
ENVELOPE = "/" + "ab" * ENVELOPE_ID_LEN


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", MAILBOX, 413),  # list: a signed query, max_query_bytes
        ("GET", MAILBOX + ENVELOPE, 413),  # fetch
        ("DELETE", MAILBOX + ENVELOPE, 413),  # ack
        ("PUT", "/v1/directory/" + "ef" * LOOKUP_ID_LEN, 413),  # publish: max_record_bytes
        ("GET", "/v1/health", 200),  # routes that take no body never read one
        ("GET", "/v1/directory", 200),
    ],
)
def test_a_64_mib_chunked_body_is_answered_before_it_is_read(
    relay_process: Bubble, method: str, path: str, status: int
) -> None:
    proc = relay_process.services["relay"].proc
    assert proc is not None
    before = vm_kib(proc.pid, "VmRSS") * 1024
    answer, sent = chunked_upload(relay_process.relay_port, method, path, BODY)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert sent < BODY // 2  # the answer came while most of the body was still unsent
    grown = vm_kib(proc.pid, "VmHWM") * 1024 - before
    assert grown < BODY // 4, f"the relay grew by {grown / MiB:.0f} MiB"


def test_max_query_bytes_is_the_signed_query_limit(tmp_path: Path) -> None:
    account = AccountKeys.generate()
    path = f"/v1/mailboxes/{account.public.mailbox_id.hex()}/envelopes"

    async def scenario() -> None:
        config = RelayConfig(home=tmp_path, trusted_roots=(RootKey.generate().public,),
                             max_query_bytes=16)
        server = RelayServer(config)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                for body, status in ((b"x" * 16, 200), (b"x" * 17, 413)):
                    headers = sign_request(account.mailbox, "GET", path, body, time.time())
                    async with session.get(server.url + path, data=body, headers=headers) as r:
                        assert r.status == status, await r.text()
        finally:
            await server.stop()

    asyncio.run(scenario())
    assert os.listdir(tmp_path)  # the relay really ran on this home
