"""Held listings (`?wait=`) and the connection cap, over real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from bridge.relay.auth import sign_request
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from tests.integration.test_relay import (
    Bubble,
    envelope_id_of,
    mailbox_path,
    make_envelope,
    raw,
    relay,
    run,
    signed_raw,
)
from tests.integration.test_relay import bubble as bubble  # the keys-only fixture

pytestmark = pytest.mark.integration


def test_a_deposit_wakes_a_held_listing_at_once(tmp_path: Path, bubble: Bubble) -> None:
    # The re-check is longer than the wait: only the deposit's wakeup can end it early.
    async def scenario() -> None:
        async with relay(tmp_path, bubble, wait_recheck=120) as (_, client):
            started = time.monotonic()
            held = asyncio.create_task(client.list(bubble.alice.mailbox, wait=60))
            await asyncio.sleep(0.3)
            assert not held.done()
            await client.deposit(make_envelope(bubble.bob), bubble.gateway)  # another mailbox
            await asyncio.sleep(0.3)
            assert not held.done()
            envelope = make_envelope(bubble.alice)
            await client.deposit(envelope, bubble.gateway)
            listing = await asyncio.wait_for(held, 30)
            assert [i.envelope_id for i in listing] == [envelope_id_of(envelope)]
            assert time.monotonic() - started < 30

            # A mailbox that already holds envelopes answers without waiting.
            assert len(await asyncio.wait_for(client.list(bubble.alice.mailbox, wait=60), 30)) == 1

    run(scenario())


def test_an_unwoken_listing_answers_empty_after_its_wait(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, max_wait=1) as (_, client):
            started = time.monotonic()
            assert await client.list(bubble.alice.mailbox, wait=2) == []
            assert time.monotonic() - started >= 1.0
            started = time.monotonic()
            assert await client.list(bubble.alice.mailbox, wait=3600) == []  # capped at max_wait
            assert time.monotonic() - started < 60

    run(scenario())


def test_a_deposit_through_another_process_is_found_by_the_recheck(
    tmp_path: Path, bubble: Bubble
) -> None:
    """Two relay servers on one home stand for two processes on one database: the
    deposit on one reaches a listing held on the other through the periodic re-check."""

    async def scenario() -> None:
        async with relay(tmp_path, bubble, wait_recheck=1) as (_, first), \
                relay(tmp_path, bubble) as (_, second):
            held = asyncio.create_task(first.list(bubble.alice.mailbox, wait=60))
            await asyncio.sleep(0.3)
            envelope = make_envelope(bubble.alice)
            started = time.monotonic()
            await second.deposit(envelope, bubble.gateway)
            listing = await asyncio.wait_for(held, 30)
            assert [i.envelope_id for i in listing] == [envelope_id_of(envelope)]
            assert time.monotonic() - started < 30

    run(scenario())


def test_wait_must_be_whole_seconds_and_is_signed(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, _):
            key = bubble.alice.mailbox
            for query in ("?wait=abc", "?wait=-1", "?wait=1.5", "?wait=1&wait=2",
                          "?wait=%EF%BC%91", "?wait=9999999"):
                answer = await signed_raw(server, key, "GET", mailbox_path(bubble.alice, query))
                assert (answer.status, answer.error()) == (400, "malformed wait"), query
            answer = await signed_raw(server, key, "GET", mailbox_path(bubble.alice, "?wait=0"))
            assert (answer.status, json.loads(answer.body)) == (200, {"envelopes": []})
            # The signature covers the query: one made for the bare path does not pass.
            signed = await signed_raw(server, key, "GET", mailbox_path(bubble.alice))
            assert signed.status == 200
            headers = sign_request(key, "GET", mailbox_path(bubble.alice), b"", time.time())
            answer = await raw(server, "GET", mailbox_path(bubble.alice, "?wait=5"),
                               headers=headers)
            assert answer.status == 401

    run(scenario())


def test_stopping_the_relay_answers_held_listings(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        server = RelayServer(RelayConfig(home=tmp_path, trusted_roots=(bubble.root.public,)))
        await server.start()
        async with RelayClient(server.url, timeout=10) as client:
            held = asyncio.create_task(client.list(bubble.alice.mailbox, wait=60))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await asyncio.wait_for(server.stop(), 30)
            assert await asyncio.wait_for(held, 30) == []
            assert time.monotonic() - started < 30

    run(scenario())


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


def test_connections_over_the_cap_get_a_clean_503(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, max_connections=2) as (server, client):
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\n\r\n")
            await writer.drain()
            answer = await _read_all(reader)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert b"Content-Type: application/json" in head
            assert json.loads(body) == {"error": "too many connections"}
            assert body.count(b"\n") == 0

            # The connections already open are served; once one closes, a new one is too.
            first_reader, first_writer = held[0]
            first_writer.write(
                b"GET /v1/health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
            )
            assert (await _read_all(first_reader)).startswith(b"HTTP/1.1 200 ")
            first_writer.close()
            await first_writer.wait_closed()
            await asyncio.sleep(0.1)
            assert await client.health()
            await client.close()
            for _, other in held[1:]:
                other.close()

    run(scenario())


def test_a_held_listing_whose_client_left_ends_at_its_next_look(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, wait_recheck=1) as (server, _):
            path = mailbox_path(bubble.alice, "?wait=60")
            headers = sign_request(bubble.alice.mailbox, "GET", path, b"", time.time())
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: relay\r\n".encode()
                         + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                         + b"\r\n")
            await writer.drain()

            async def held() -> float:
                answer = await raw(server, "GET", "/metrics")
                found = re.search(rb"^sealgate_relay_held_listings (\S+)$", answer.body,
                                  re.MULTILINE)
                assert found
                return float(found.group(1))

            deadline = time.monotonic() + 10
            while await held() != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await held() == 1
            writer.close()
            await writer.wait_closed()
            deadline = time.monotonic() + 10
            while await held() != 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await held() == 0  # long before its 60 s were up
            del reader

    run(scenario())
