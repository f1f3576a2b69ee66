"""Hostile clients against a relay on 127.0.0.1: slow-loris heads and bodies, replayed
signatures, and a Hypothesis fuzz driven by docs/relay-api.openapi.json.

Each gets its documented status with a one-line JSON error (or, for a head that never
completes, a closed connection), and the relay keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.envelope import OuterHeader
from bridge.keys import AccountKeys, GatewayCredential, RootKey, mailbox_id_for
from bridge.relay.auth import sign_deposit, sign_request
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer, build_app
from bridge.relay.storage import SqliteFileStorage
from tests.integration.test_relay import (
    Bubble,
    envelope_id_of,
    mailbox_path,
    make_envelope,
    raw,
    relay,
    run,
)

pytestmark = pytest.mark.integration

SPEC = json.loads(
    (Path(__file__).parents[2] / "docs" / "relay-api.openapi.json").read_text(encoding="utf-8")
)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture
def bubble() -> Bubble:
    root = RootKey.generate()
    alice, bob = AccountKeys.generate(), AccountKeys.generate()
    return Bubble(root, GatewayCredential.issue(root), alice, bob)


async def _closed_or_answered(reader: asyncio.StreamReader, wait: float) -> bytes | None:
    """The answer the relay sent (b"" if it closed without one), or None if it is still open."""
    try:
        reply = await asyncio.wait_for(reader.read(65536), wait)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""
    if reply:
        while b"\r\n\r\n" not in reply:
            reply += await asyncio.wait_for(reader.read(65536), 10)
        found = re.search(rb"\r\nContent-Length: (\d+)\r\n", reply)
        assert found, reply
        missing = int(found.group(1)) - len(reply.partition(b"\r\n\r\n")[2])
        if missing > 0:
            reply += await asyncio.wait_for(reader.readexactly(missing), 10)
    return reply


def test_slow_head_is_cut_off_while_others_are_served(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, header_timeout=1) as (server, client):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
            outcome = None
            for _ in range(30):  # one byte a second; header_timeout is 1 s
                with contextlib.suppress(ConnectionError):
                    writer.write(b"a")
                    await writer.drain()
                assert await client.health()
                outcome = await _closed_or_answered(reader, 1.0)
                if outcome is not None:
                    break
            writer.close()
            assert outcome == b"", "the relay answered or kept a slow head open"
            assert await client.health()

    run(scenario())


def test_slow_body_gets_408_while_others_deposit(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, body_timeout=1) as (server, client):
            envelope = make_envelope(bubble.alice, 100)
            headers = sign_deposit(bubble.gateway, "/v1/envelopes", envelope, time.time())
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                f"POST /v1/envelopes HTTP/1.1\r\nHost: relay\r\n"
                f"Content-Length: {len(envelope)}\r\n{head}\r\n".encode()
            )
            other = make_envelope(bubble.alice)
            reply = None
            for offset in range(30):  # one byte a second; body_timeout is 1 s
                with contextlib.suppress(ConnectionError):
                    writer.write(envelope[offset : offset + 1])
                    await writer.drain()
                await client.deposit(other, bubble.gateway)
                reply = await _closed_or_answered(reader, 1.0)
                if reply is not None:
                    break
            writer.close()
            assert reply is not None and reply.startswith(b"HTTP/1.1 408 "), reply
            head_part, _, body = reply.partition(b"\r\n\r\n")
            assert b"Content-Type: application/json" in head_part
            assert b"Connection: close" in head_part
            assert json.loads(body) == {"error": "request body too slow"}
            listing = await client.list(bubble.alice.mailbox)
            assert [item.envelope_id for item in listing] == [envelope_id_of(other)]

    run(scenario())


def test_timeouts_are_settings() -> None:
    for name in ("header_timeout", "body_timeout"):
        with pytest.raises(ValueError, match=name):
            RelayConfig(home=Path("/nonexistent"), **{name: 0})


def test_replayed_signatures(tmp_path: Path, bubble: Bubble) -> None:
    """A captured signature opens nothing but the very request it was made for.

    Within max_clock_skew that request may be repeated (every signed request is
    idempotent, and deterministic Ed25519 gives two honest requests of one second
    the same signature, so a replay cache would refuse honest retries); outside it,
    or on any other method, path or body, it is 401.
    """

    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice)
            now = time.time()
            deposit_headers = sign_deposit(bubble.gateway, "/v1/envelopes", envelope, now)
            for expected in (201, 200):  # the replay stores nothing new
                answer = await raw(server, "POST", "/v1/envelopes", envelope, deposit_headers)
                assert answer.status == expected
            other = make_envelope(bubble.alice)
            answer = await raw(server, "POST", "/v1/envelopes", other, deposit_headers)
            assert (answer.status, answer.error()) == (401, "bad request signature")

            item = mailbox_path(bubble.alice, "/" + envelope_id_of(envelope).hex())
            fetch = sign_request(bubble.alice.mailbox, "GET", item, b"", now)
            assert (await raw(server, "GET", item, headers=fetch)).status == 200
            answer = await raw(server, "DELETE", item, headers=fetch)
            assert (answer.status, answer.error()) == (401, "bad request signature")
            answer = await raw(server, "GET", mailbox_path(bubble.bob), headers=fetch)
            assert (answer.status, answer.error()) == (401, "bad request signature")

            await client.ack(bubble.alice.mailbox, envelope_id_of(envelope))
            answer = await raw(server, "GET", item, headers=fetch)  # no resurrection
            assert (answer.status, answer.error()) == (404, "no such envelope")

            old = sign_request(bubble.alice.mailbox, "GET", item, b"", now - 301)
            answer = await raw(server, "GET", item, headers=old)
            assert answer.status == 401 and "clock skew" in answer.error()

    run(scenario())


# the fuzz


class _RelayThread:
    """A relay on its own event loop in a thread, so that a synchronous fuzz can drive it."""

    def __init__(self, config: RelayConfig) -> None:
        self._server = RelayServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(30)
        return self._server.port

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def _operations() -> list[tuple[str, str, dict[str, object]]]:
    return [
        (method.upper(), path, operation)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items() if method in METHODS
    ]


def _id_lengths() -> dict[str, int]:
    """Hex length of every path parameter, from the spec's patterns."""
    lengths = {}
    for item in SPEC["paths"].values():
        for parameter in item.get("parameters", []):
            found = re.search(r"\{(\d+)\}", parameter["schema"]["pattern"])
            assert found
            lengths[parameter["name"]] = int(found.group(1))
    return lengths


OPERATIONS = _operations()
ID_LENGTHS = _id_lengths()
SEGMENT = st.text(string.ascii_letters + string.digits + "-._~%", max_size=70)


@st.composite
def fuzz_requests(
    draw: st.DrawFn, mailbox: nacl.signing.SigningKey, credential: GatewayCredential,
) -> tuple[str, str, bytes, dict[str, str]]:
    if draw(st.integers(0, 9)) == 0:  # anywhere, any method
        method = draw(st.sampled_from([m.upper() for m in METHODS]))
        path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=5)))
    else:
        method, template, _ = draw(st.sampled_from(OPERATIONS))

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "mailbox_id" and draw(st.booleans()):
                return bytes(mailbox_id_of(mailbox)).hex()
            return draw(st.one_of(
                st.binary(min_size=ID_LENGTHS[name] // 2, max_size=ID_LENGTHS[name] // 2)
                .map(bytes.hex),
                SEGMENT.filter(bool),
            ))

        path = re.sub(r"\{(\w+)\}", fill, template)
        if draw(st.integers(0, 4)) == 0:  # a known path, maybe with another method
            method = draw(st.sampled_from([m.upper() for m in METHODS]))
    envelope_size = draw(st.integers(0, 300))
    header = OuterHeader(os.urandom(16), mailbox_id_of(mailbox), envelope_size)
    envelope = header.pack() + os.urandom(envelope_size)
    body = draw(st.one_of(
        st.just(b""),
        st.binary(max_size=600),
        st.just(envelope),
        st.binary(max_size=60).map(lambda junk: envelope[: len(junk)] + junk),
        st.builds(lambda v: json.dumps(v).encode(), st.dictionaries(
            st.sampled_from(["lookup_id", "version", "sealed", "signature", "gateway_key"]),
            st.one_of(st.integers(), st.text(max_size=80), st.none()), max_size=5,
        )),
    ))
    auth = draw(st.sampled_from(["none", "mailbox", "gateway", "garbage"]))
    headers: dict[str, str] = {}
    if auth == "mailbox":
        headers = sign_request(mailbox, method, path, body, time.time())
    elif auth == "gateway":
        headers = sign_deposit(credential, path, body, time.time())
    elif auth == "garbage":
        headers = {
            name: draw(st.text(string.printable.strip(), max_size=90))
            for name in draw(st.sets(st.sampled_from(
                ["Sealgate-Key", "Sealgate-Time", "Sealgate-Signature", "Sealgate-Credential"]
            )))
        }
    return method, path, body, headers


def mailbox_id_of(key: nacl.signing.SigningKey) -> bytes:
    return mailbox_id_for(bytes(key.verify_key))


def _documented(method: str, path: str) -> set[int]:
    """The statuses the spec allows for this request.

    HEAD: those of GET, or 405 where HEAD is refused (the mailbox routes).
    """
    asked = "GET" if method == "HEAD" else method
    matching = [(m, op) for m, template, op in OPERATIONS if _pattern(template).match(path)]
    for op_method, operation in matching:
        if op_method == asked:
            responses = operation["responses"]
            assert isinstance(responses, dict)
            return {int(status) for status in responses} | ({405} if method == "HEAD" else set())
    return {405} if matching else {404}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$")


@contextlib.contextmanager
def _connection(port: int) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def test_fuzzed_requests_get_documented_statuses_and_json_errors(
    tmp_path: Path, bubble: Bubble
) -> None:
    config = RelayConfig(home=tmp_path, trusted_roots=(bubble.root.public,))
    seen: set[int] = set()
    with _RelayThread(config) as port:

        @settings(max_examples=1000, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(fuzz_requests(bubble.alice.mailbox, bubble.gateway))
        def check(request: tuple[str, str, bytes, dict[str, str]]) -> None:
            method, path, body, headers = request
            with _connection(port) as connection:
                connection.request(method, path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            status = response.status
            seen.add(status)
            assert status != 500, (method, path)
            allowed = _documented(method, path)
            assert status in allowed, (method, path, status, payload[:200])
            if status >= 400 and method != "HEAD":
                assert response.getheader("Content-Type", "").startswith("application/json")
                error = json.loads(payload)
                assert set(error) == {"error"} and isinstance(error["error"], str)
                assert "\n" not in payload.decode()

        check()
        with _connection(port) as connection:  # still serving
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
    assert {200, 400, 401, 403, 404, 405} <= seen, seen  # the fuzz reached past the checks


def test_every_route_is_described(tmp_path: Path, bubble: Bubble) -> None:
    storage = SqliteFileStorage(tmp_path)
    try:
        app = build_app(RelayConfig(home=tmp_path), storage)
        served = {
            (route.method, resource.canonical)
            for resource in app.router.resources() for route in resource
            if route.method != "HEAD"
        }
    finally:
        storage.close()
    described = {(method, path) for method, path, _ in OPERATIONS}
    assert served == described
