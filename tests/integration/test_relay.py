"""The relay over real sockets: RelayServer on 127.0.0.1:0, RelayClient and raw HTTP.

Every test that takes `bubble` runs once per storage backend (SQLite + files, then
PostgreSQL: tests/relay_backends.py), the relay opening the bubble's backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nacl.encoding
import nacl.hash
import nacl.secret
import nacl.signing
import pytest
import yarl
from aiohttp import web

from bridge.directory import RECORD_CONTEXT, DirectoryRecord
from bridge.envelope import OuterHeader
from bridge.errors import RelayRejected, RelayUnavailable
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.auth import HEADER_CREDENTIAL, sign_deposit, sign_request
from bridge.relay.client import EnvelopeInfo, RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer, serve_forever
from bridge.relay.storage import PutOutcome, SqliteFileStorage
from bridge.revocation import GatewayRevocation
from tests.relay_backends import Backend
from tests.relay_servers import serve_app

pytestmark = pytest.mark.integration


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


@dataclass(frozen=True)
class Bubble:
    root: RootKey
    gateway: GatewayCredential
    alice: AccountKeys
    bob: AccountKeys
    backend: Backend | None = None  # where the test's relays keep state (None: SQLite + files)

    @property
    def db(self) -> str | None:
        return None if self.backend is None else self.backend.db

    @property
    def store(self) -> Backend:
        assert self.backend is not None, "this bubble was made without a backend"
        return self.backend


@pytest.fixture
def bubble(relay_backend: Backend) -> Bubble:
    root = RootKey.generate()
    alice, bob = AccountKeys.generate(), AccountKeys.generate()
    return Bubble(root, GatewayCredential.issue(root), alice, bob, relay_backend)


def make_envelope(
    account: AccountKeys, size: int = 1000, envelope_id: bytes | None = None
) -> bytes:
    ciphertext = os.urandom(size)
    header = OuterHeader(envelope_id or os.urandom(16), account.public.mailbox_id, len(ciphertext))
    return header.pack() + ciphertext


def envelope_id_of(envelope: bytes) -> bytes:
    return envelope[4:20]


def make_record(
    root: RootKey, lookup_id: bytes, sealed: bytes, version: int = 1
) -> DirectoryRecord:
    unsigned = DirectoryRecord(lookup_id, version, sealed, b"")
    return DirectoryRecord(
        lookup_id, version, sealed, root.sign(RECORD_CONTEXT, unsigned.publisher_message())
    )


@contextlib.asynccontextmanager
async def relay(
    home: Path, bubble: Bubble, **settings: Any
) -> AsyncIterator[tuple[RelayServer, RelayClient]]:
    config = RelayConfig(
        home=home, trusted_roots=(bubble.root.public,), db=bubble.db, **settings
    )
    server = RelayServer(config)
    await server.start()
    client = RelayClient(server.url, timeout=10)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def error(self) -> str:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self
        data = json.loads(self.body)
        assert set(data) == {"error"}
        return str(data["error"])


async def raw(
    server: RelayServer, method: str, path: str, body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Answer:
    url = yarl.URL(server.url + path, encoded=True)
    async with aiohttp.ClientSession() as session, session.request(
        method, url, data=body or None, headers=headers, allow_redirects=False
    ) as response:
        return Answer(response.status, await response.read(), dict(response.headers))


async def raw_deposit(
    server: RelayServer, credential: GatewayCredential, envelope: bytes, now: float | None = None
) -> Answer:
    when = time.time() if now is None else now
    headers = sign_deposit(credential, "/v1/envelopes", envelope, when)
    return await raw(server, "POST", "/v1/envelopes", envelope, headers)


def mailbox_path(account: AccountKeys, suffix: str = "") -> str:
    return f"/v1/mailboxes/{account.public.mailbox_id.hex()}/envelopes{suffix}"


async def signed_raw(
    server: RelayServer, key: nacl.signing.SigningKey, method: str, path: str
) -> Answer:
    headers = sign_request(key, method, path, b"", time.time())
    return await raw(server, method, path, headers=headers)


# round trip


def test_health(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            assert await client.health() is True
            answer = await raw(server, "GET", "/v1/health")
            assert (answer.status, json.loads(answer.body)) == (200, {"status": "ok"})

    run(scenario())


def test_deposit_list_fetch_ack_round_trip(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (_, client):
            # Ids in descending order: the listing must follow deposit order, not id order.
            envelopes = [
                make_envelope(bubble.alice, 500 + n, envelope_id=bytes([200 - n]) * 16)
                for n in range(3)
            ]
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            await client.deposit(make_envelope(bubble.bob), bubble.gateway)

            before = int(time.time())
            listing = await client.list(bubble.alice.mailbox)
            assert [(i.envelope_id, i.size) for i in listing] == [
                (envelope_id_of(e), len(e)) for e in envelopes
            ]
            for info in listing:
                assert info.received % 3600 == 0 and before - 3600 < info.received <= before

            for envelope in envelopes:
                fetched = await client.fetch(bubble.alice.mailbox, envelope_id_of(envelope))
                assert fetched == envelope
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelopes[0]))
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelopes[0]))  # idempotent
            await client.ack(bubble.alice.mailbox, os.urandom(16))  # unknown: also fine
            remaining = await client.list(bubble.alice.mailbox)
            assert [i.envelope_id for i in remaining] == [envelope_id_of(e) for e in envelopes[1:]]
            with pytest.raises(RelayRejected) as caught:
                await client.fetch(bubble.alice.mailbox, envelope_id_of(envelopes[0]))
            assert (caught.value.status, caught.value.reason) == (404, "no such envelope")
            assert len(await client.list(bubble.bob.mailbox)) == 1

    run(scenario())


def test_list_is_capped_oldest_first(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, max_list=3) as (_, client):
            envelopes = [make_envelope(bubble.alice, 10) for _ in range(5)]
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            first = await client.list(bubble.alice.mailbox)
            assert [i.envelope_id for i in first] == [envelope_id_of(e) for e in envelopes[:3]]
            for info in first:
                await client.ack(bubble.alice.mailbox, info.envelope_id)
            rest = await client.list(bubble.alice.mailbox)
            assert [i.envelope_id for i in rest] == [envelope_id_of(e) for e in envelopes[3:]]

    run(scenario())


def test_redeposit_is_idempotent(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice)
            expected = {"id": envelope_id_of(envelope).hex()}
            first = await raw_deposit(server, bubble.gateway, envelope)
            assert (first.status, json.loads(first.body)) == (201, expected)
            again = await raw_deposit(server, bubble.gateway, envelope)
            assert (again.status, json.loads(again.body)) == (200, expected)
            await client.deposit(envelope, bubble.gateway)
            other_gateway = GatewayCredential.issue(bubble.root)
            await client.deposit(envelope, other_gateway)
            assert len(await client.list(bubble.alice.mailbox)) == 1

    run(scenario())


def test_different_bytes_under_an_existing_id_conflict(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (_, client):
            envelope_id = os.urandom(16)
            original = make_envelope(bubble.alice, envelope_id=envelope_id)
            await client.deposit(original, bubble.gateway)
            for impostor in (
                make_envelope(bubble.alice, envelope_id=envelope_id),
                make_envelope(bubble.bob, envelope_id=envelope_id),
            ):
                with pytest.raises(RelayRejected) as caught:
                    await client.deposit(impostor, bubble.gateway)
                assert caught.value.status == 409
            assert await client.fetch(bubble.alice.mailbox, envelope_id) == original
            assert await client.list(bubble.bob.mailbox) == []

    run(scenario())


# who may deposit


def test_unauthenticated_deposits_are_refused(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice)
            now = time.time()

            answer = await raw(server, "POST", "/v1/envelopes", envelope)
            assert (answer.status, answer.error()) == (401, "missing Sealgate-Key")

            headers = sign_deposit(bubble.gateway, "/v1/envelopes", envelope, now)
            del headers[HEADER_CREDENTIAL]
            answer = await raw(server, "POST", "/v1/envelopes", envelope, headers)
            assert (answer.status, answer.error()) == (401, "missing Sealgate-Credential")

            stranger = GatewayCredential.issue(RootKey.generate())
            answer = await raw_deposit(server, stranger, envelope)
            assert answer.status == 403, answer
            with pytest.raises(RelayRejected) as caught:
                await client.deposit(envelope, stranger)
            assert caught.value.status == 403

            # A trusted gateway's certificate presented with another key.
            borrowed = GatewayCredential(
                seed=os.urandom(32), certificate=bubble.gateway.certificate
            )
            assert (await raw_deposit(server, borrowed, envelope)).status == 403

            signed_other_body = sign_deposit(bubble.gateway, "/v1/envelopes", b"other", now)
            answer = await raw(server, "POST", "/v1/envelopes", envelope, signed_other_body)
            assert (answer.status, answer.error()) == (401, "bad request signature")

            for skew in (-1000, 1000):
                answer = await raw_deposit(server, bubble.gateway, envelope, now + skew)
                assert answer.status == 401 and "clock skew" in answer.error()

            assert await client.list(bubble.alice.mailbox) == []

    run(scenario())


def test_malformed_envelopes_are_refused(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            good = make_envelope(bubble.alice, 100)
            cases = {
                b"": "envelope shorter than its header",
                good[:40]: "envelope shorter than its header",
                b"XXXX" + good[4:]: "not a Sealgate v1 envelope",
                good[:-1]: "envelope length does not match its header",
                good + b"\0": "envelope length does not match its header",
            }
            for body, reason in cases.items():
                answer = await raw_deposit(server, bubble.gateway, body)
                assert (answer.status, answer.error()) == (400, reason)
            with pytest.raises(RelayRejected) as caught:
                await client.deposit(good[:-1], bubble.gateway)
            assert caught.value.status == 400
            assert await client.list(bubble.alice.mailbox) == []

    run(scenario())


def test_oversize_deposits_get_413(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        limit = 56 + 4096
        async with relay(tmp_path, bubble, max_envelope_bytes=limit) as (server, client):
            fits = make_envelope(bubble.alice, 4096)
            await client.deposit(fits, bubble.gateway)
            for size in (4097, 2 * 1024 * 1024):
                with pytest.raises(RelayRejected) as caught:
                    await client.deposit(make_envelope(bubble.alice, size), bubble.gateway)
                assert (caught.value.status, caught.value.reason) == (413, "request body too large")

            # Chunked upload: no Content-Length to refuse early.
            big = make_envelope(bubble.alice, 300 * 1024)

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(big), 65536):
                    yield big[start : start + 65536]

            headers = sign_deposit(bubble.gateway, "/v1/envelopes", big, time.time())
            async with aiohttp.ClientSession() as session, session.post(
                server.url + "/v1/envelopes", data=chunks(), headers=headers
            ) as response:
                assert response.status == 413
                assert (await response.json())["error"] == "request body too large"

            listing = await client.list(bubble.alice.mailbox)
            assert [i.envelope_id for i in listing] == [envelope_id_of(fits)]

    run(scenario())


# who may read


def test_reading_someone_elses_mailbox_is_forbidden(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice)
            await client.deposit(envelope, bubble.gateway)
            item = "/" + envelope_id_of(envelope).hex()
            for method, path in (
                ("GET", mailbox_path(bubble.alice)),
                ("GET", mailbox_path(bubble.alice, item)),
                ("DELETE", mailbox_path(bubble.alice, item)),
            ):
                for key in (bubble.bob.mailbox, bubble.alice.signing, bubble.gateway.signing_key):
                    answer = await signed_raw(server, key, method, path)
                    assert (answer.status, answer.error()) == (403, "key does not own this mailbox")
                answer = await raw(server, method, path)
                assert (answer.status, answer.error()) == (401, "missing Sealgate-Key")

            # Bob's own mailbox path with Alice's envelope id: not his, so not there.
            bobs_path = mailbox_path(bubble.bob, item)
            answer = await signed_raw(server, bubble.bob.mailbox, "GET", bobs_path)
            assert (answer.status, answer.error()) == (404, "no such envelope")
            await client.ack(bubble.bob.mailbox, envelope_id_of(envelope))
            assert await client.fetch(bubble.alice.mailbox, envelope_id_of(envelope)) == envelope

            # A signature made for the listing does not open the envelope.
            list_headers = sign_request(
                bubble.alice.mailbox, "GET", mailbox_path(bubble.alice), b"", time.time()
            )
            fetch_path = mailbox_path(bubble.alice, item)
            answer = await raw(server, "GET", fetch_path, headers=list_headers)
            assert (answer.status, answer.error()) == (401, "bad request signature")

            stale = sign_request(
                bubble.alice.mailbox, "GET", mailbox_path(bubble.alice), b"", time.time() - 301
            )
            answer = await raw(server, "GET", mailbox_path(bubble.alice), headers=stale)
            assert answer.status == 401

    run(scenario())


# malformed requests never reach a 500


def test_malformed_requests_get_json_4xx(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, _):
            key = bubble.alice.mailbox
            mailbox_hex = bubble.alice.public.mailbox_id.hex()
            cases = [
                ("GET", "/v1/mailboxes/zz/envelopes", 400, "malformed mailbox id"),
                ("GET", f"/v1/mailboxes/{mailbox_hex.upper()}/envelopes", 400,
                 "malformed mailbox id"),
                ("GET", f"/v1/mailboxes/{mailbox_hex[:-2]}/envelopes", 400, "malformed mailbox id"),
                ("GET", f"/v1/mailboxes/{mailbox_hex}/envelopes/xyz", 400, "malformed envelope id"),
                ("GET", "/v1/directory/" + "AB" * 32, 400, "malformed lookup id"),
                ("GET", "/v1/nothing", 404, "not found"),
                ("GET", "/", 404, "not found"),
                ("GET", "/v1/envelopes", 405, "method not allowed"),
                ("PATCH", f"/v1/mailboxes/{mailbox_hex}/envelopes", 405, "method not allowed"),
                ("POST", "/v1/health", 405, "method not allowed"),
            ]
            for method, path, status, reason in cases:
                answer = await signed_raw(server, key, method, path)
                assert (answer.status, answer.error()) == (status, reason), (method, path)
            answer = await raw(server, "DELETE", "/v1/directory")
            assert "GET" in answer.headers["Allow"]

            good = sign_request(key, "GET", mailbox_path(bubble.alice), b"", time.time())
            for header, value in [
                ("Sealgate-Key", "%%%"),
                ("Sealgate-Signature", good["Sealgate-Signature"].rstrip("=")),
                ("Sealgate-Time", "yesterday"),
            ]:
                answer = await raw(
                    server, "GET", mailbox_path(bubble.alice), headers=good | {header: value}
                )
                assert (answer.status, answer.error()) == (401, f"malformed {header}")

            body = b"x" * 5000
            headers = sign_request(key, "GET", mailbox_path(bubble.alice), body, time.time())
            answer = await raw(server, "GET", mailbox_path(bubble.alice), body, headers)
            assert answer.status == 413

    run(scenario())


def test_garbage_on_the_socket_gets_a_4xx_without_traceback(
    tmp_path: Path, bubble: Bubble, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            for garbage in (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
                b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
                b"POST /v1/envelopes HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(garbage)
                await writer.drain()
                reply = await asyncio.wait_for(reader.read(65536), 5)
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                assert re.match(rb"HTTP/1\.[01] 4\d\d ", reply), reply[:100]
                assert b"Traceback" not in reply and b"File \"" not in reply
            assert await client.health()

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    relay_lines = [r for r in caplog.records if r.name.startswith(("sealgate", "aiohttp"))]
    assert any(r.getMessage().startswith("event=bad_http error=") for r in relay_lines)
    for record in relay_lines:
        assert record.levelno <= logging.INFO and record.exc_info is None, record.getMessage()
        assert "\n" not in record.getMessage() and "127.0.0.1" not in record.getMessage()


# the directory


def test_directory_publish_lookup_and_list(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            first = make_record(bubble.root, os.urandom(32), os.urandom(300))
            second = make_record(bubble.root, os.urandom(32), os.urandom(300))
            assert await client.lookup(first.lookup_id) is None
            await client.publish(first)
            await client.publish(second)
            assert await client.lookup(first.lookup_id) == first
            assert sorted(await client.directory(), key=lambda r: r.lookup_id) == sorted(
                [first, second], key=lambda r: r.lookup_id
            )
            replacement = make_record(bubble.root, first.lookup_id, os.urandom(200), version=2)
            await client.publish(replacement)
            assert await client.lookup(first.lookup_id) == replacement
            assert len(await client.directory()) == 2

            # Directory reads need no signature.
            answer = await raw(server, "GET", f"/v1/directory/{second.lookup_id.hex()}")
            assert (answer.status, json.loads(answer.body)) == (200, second.to_json())

    run(scenario())


def test_directory_refuses_unsigned_or_malformed_records(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, max_record_bytes=4096) as (server, client):
            lookup_id = os.urandom(32)
            foreign = make_record(RootKey.generate(), lookup_id, b"sealed entry")
            with pytest.raises(RelayRejected) as caught:
                await client.publish(foreign)
            assert caught.value.status == 403
            honest = make_record(bubble.root, lookup_id, b"sealed entry")
            tampered = DirectoryRecord(lookup_id, 1, b"sealed entrY", honest.signature)
            with pytest.raises(RelayRejected) as caught:
                await client.publish(tampered)
            assert caught.value.status == 403

            path = f"/v1/directory/{lookup_id.hex()}"
            other_path = f"/v1/directory/{os.urandom(32).hex()}"
            json_headers = {"Content-Type": "application/json"}
            cases = [
                (path, b"{not json", 400, "malformed JSON"),
                (path, b"[" * 100 + b"]" * 100, 400, "malformed directory record"),
                (path, b"[" * 2000 + b"]" * 2000, 400, "malformed JSON"),  # too deep
                (path, b"[" * 4000, 400, "malformed JSON"),
                (path, b'{"lookup_id": "00"}', 400, "malformed directory record"),
                (path, b"\xff\xfe", 400, "malformed JSON"),
                (other_path, json.dumps(honest.to_json()).encode(), 400,
                 "lookup id does not match the path"),
                (path, b" " * 5000, 413, "request body too large"),
            ]
            for target, body, status, reason in cases:
                answer = await raw(server, "PUT", target, body, json_headers)
                assert (answer.status, answer.error()) == (status, reason), body[:20]
            assert await client.directory() == []
            await client.publish(honest)
            assert await client.directory() == [honest]

    run(scenario())


def test_replayed_old_record_gets_409_and_the_newer_is_kept(
    tmp_path: Path, bubble: Bubble
) -> None:
    """An old, genuinely root-signed record republished after a re-key: refused."""
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            lookup_id = os.urandom(32)
            old = make_record(bubble.root, lookup_id, b"keys before the rotation", version=1)
            new = make_record(bubble.root, lookup_id, b"keys after the rotation", version=2)
            await client.publish(old)
            await client.publish(new)
            path = f"/v1/directory/{lookup_id.hex()}"
            for stale in (old, make_record(bubble.root, lookup_id, b"same version", version=2)):
                answer = await raw(server, "PUT", path, json.dumps(stale.to_json()).encode(),
                                   {"Content-Type": "application/json"})
                assert (answer.status, answer.error()) == (
                    409, "a record with this or a newer version is stored"
                )
                with pytest.raises(RelayRejected) as caught:
                    await client.publish(stale)
                assert caught.value.status == 409
            assert await client.lookup(lookup_id) == new
            assert await client.directory() == [new]
        async with relay(tmp_path, bubble) as (_, client):  # and across a restart
            with pytest.raises(RelayRejected):
                await client.publish(old)
            assert await client.lookup(lookup_id) == new

    run(scenario())


# gateway revocations


def test_revoked_gateway_gets_403_and_others_still_deposit(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        other = GatewayCredential.issue(bubble.root)
        revocation = GatewayRevocation.issue(bubble.root, bubble.gateway.verify_key)
        async with relay(tmp_path, bubble) as (server, client):
            await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            await client.revoke_gateway(revocation)
            await client.revoke_gateway(revocation)  # idempotent
            answer = await raw_deposit(server, bubble.gateway, make_envelope(bubble.alice))
            assert (answer.status, answer.error()) == (403, "gateway credential is revoked")
            await client.deposit(make_envelope(bubble.bob), other)
            assert await client.gateway_revocations() == [revocation]
            listing = await raw(server, "GET", "/v1/revocations/gateways")
            assert json.loads(listing.body) == {"revocations": [revocation.to_json()]}
        async with relay(tmp_path, bubble) as (server, client):  # kept across a restart
            answer = await raw_deposit(server, bubble.gateway, make_envelope(bubble.alice))
            assert answer.status == 403
            assert len(await client.list(bubble.alice.mailbox)) == 1

    run(scenario())


def test_gateway_revocation_must_be_signed_by_a_trusted_root(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        key = bubble.gateway.verify_key
        path = f"/v1/revocations/gateways/{key.hex()}"
        foreign = GatewayRevocation.issue(RootKey.generate(), key)
        honest = GatewayRevocation.issue(bubble.root, key)
        other_key = GatewayRevocation.issue(bubble.root, os.urandom(32))
        headers = {"Content-Type": "application/json"}
        async with relay(tmp_path, bubble) as (server, client):
            cases = [
                (foreign.to_json(), 403, "revocation is not signed by a trusted root"),
                (other_key.to_json(), 400, "gateway key does not match the path"),
                ({"gateway_key": key.hex()}, 400, "malformed revocation"),
                ([], 400, "malformed revocation"),
            ]
            for body, status, reason in cases:
                answer = await raw(server, "PUT", path, json.dumps(body).encode(), headers)
                assert (answer.status, answer.error()) == (status, reason)
            answer = await raw(server, "PUT", path, b"{", headers)
            assert (answer.status, answer.error()) == (400, "malformed JSON")
            answer = await raw(server, "PUT", path, b" " * 2000, headers)
            assert answer.status == 413
            answer = await raw(server, "PUT", "/v1/revocations/gateways/zz", b"{}", headers)
            assert (answer.status, answer.error()) == (400, "malformed gateway key")
            assert await client.gateway_revocations() == []
            await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            await client.revoke_gateway(honest)
            with pytest.raises(RelayRejected) as caught:
                await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            assert caught.value.status == 403

    run(scenario())


# durability and what is on disk


def test_restart_keeps_envelopes_and_records(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        envelopes = [make_envelope(bubble.alice, 2000) for _ in range(3)]
        record = make_record(bubble.root, os.urandom(32), b"sealed")
        async with relay(tmp_path, bubble) as (_, client):
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            await client.publish(record)
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelopes[1]))
        async with relay(tmp_path, bubble) as (_, client):
            listing = await client.list(bubble.alice.mailbox)
            # Within an hour, the order of deposits made before a restart is forgotten.
            assert {i.envelope_id for i in listing} == {
                envelope_id_of(envelopes[0]), envelope_id_of(envelopes[2])
            }
            fetched = await client.fetch(bubble.alice.mailbox, envelope_id_of(envelopes[2]))
            assert fetched == envelopes[2]
            assert await client.lookup(record.lookup_id) == record
            await client.deposit(envelopes[0], bubble.gateway)  # still known: idempotent
            assert len(await client.list(bubble.alice.mailbox)) == 2

    run(scenario())


def _files_containing(home: Path, needle: bytes) -> list[Path]:  # the scan of control
    return [path for path in home.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_no_address_at_rest_and_files_hold_exact_bytes(tmp_path: Path, bubble: Bubble) -> None:
    canary = f"canary-{os.urandom(6).hex()}@sealgate-test.example"
    # The scan finds the canary when it is there, so a pass means something.
    control = tmp_path / "control"
    control.mkdir()
    (control / "probe").write_bytes(b"prefix " + canary.encode() + b" suffix")
    assert _files_containing(control, canary.encode()) == [control / "probe"]

    home = tmp_path / "relay"

    async def scenario() -> None:
        async with relay(home, bubble) as (_, client):
            deposited = [make_envelope(bubble.alice, n) for n in (0, 1, 4096, 70000)]
            for envelope in deposited:
                await client.deposit(envelope, bubble.gateway)
            # What a gateway publishes: a keyed hash of the address and a sealed entry.
            directory_key = os.urandom(32)
            lookup_id = nacl.hash.blake2b(
                canary.encode(), key=directory_key, encoder=nacl.encoding.RawEncoder
            )
            entry = json.dumps(
                {"address": canary, "mailbox_id": bubble.alice.public.mailbox_id.hex()}
            )
            sealed = bytes(nacl.secret.SecretBox(directory_key).encrypt(entry.encode()))
            await client.publish(make_record(bubble.root, lookup_id, sealed))
            await client.ack(bubble.alice.mailbox, envelope_id_of(deposited[0]))

        mailbox = bubble.alice.public.mailbox_id
        backend = dataclasses.replace(bubble.store, home=home)
        for envelope in deposited:
            kept = backend.at_rest(mailbox, envelope_id_of(envelope))
            assert kept == (None if envelope is deposited[0] else envelope)
        if bubble.db is None:
            files = {path for path in (home / "envelopes").rglob("*") if path.is_file()}
            assert files == {home / "envelopes" / mailbox[:1].hex() / envelope_id_of(e).hex()
                             for e in deposited[1:]}
            at_rest = b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())
        else:
            at_rest = bubble.store.dump()
        for needle in (canary, canary.upper(), canary.split("@")[0]):
            for encoding in ("utf-8", "utf-16-le"):
                assert needle.encode(encoding) not in at_rest
        assert envelope_id_of(deposited[1]) in at_rest  # the scan reads what is kept

    run(scenario())


def test_logs_name_routes_not_ids(
    tmp_path: Path, bubble: Bubble, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (_, client):
            envelope = make_envelope(bubble.alice)
            await client.deposit(envelope, bubble.gateway)
            await client.list(bubble.alice.mailbox)
            await client.fetch(bubble.alice.mailbox, envelope_id_of(envelope))
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelope))

    with caplog.at_level(logging.INFO, logger="sealgate.relay"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records if r.name == "sealgate.relay.access"] == []

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="sealgate.relay"):
        run(scenario())
    lines = [record.getMessage() for record in caplog.records]
    assert (
        "event=request method=GET route=/v1/mailboxes/{mailbox_id}/envelopes/{envelope_id}"
        " status=200 seconds=" in "\n".join(lines)
    )
    assert "event=request method=POST route=/v1/envelopes status=201" in "\n".join(lines)
    for line in lines:
        assert "\n" not in line
        assert bubble.alice.public.mailbox_id.hex() not in line
        assert bubble.alice.public.mailbox_id.hex()[:16] not in line
        assert "127.0.0.1" not in line


# failures the gateway must see as RelayUnavailable / RelayRejected


def test_nothing_listening_is_unavailable(bubble: Bubble) -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        async with RelayClient(f"http://127.0.0.1:{port}", timeout=2) as client:
            assert await client.health() is False
            with pytest.raises(RelayUnavailable):
                await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            with pytest.raises(RelayUnavailable):
                await client.list(bubble.alice.mailbox)
            with pytest.raises(RelayUnavailable):
                await client.lookup(os.urandom(32))

    run(scenario())


class FailingStorage(SqliteFileStorage):
    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        raise OSError(28, "No space left on device")


def test_storage_failure_is_a_bare_500_and_unavailable(
    tmp_path: Path, bubble: Bubble, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        storage = FailingStorage(tmp_path)
        config = RelayConfig(home=tmp_path, trusted_roots=(bubble.root.public,))
        server = RelayServer(config, storage)
        await server.start()
        try:
            envelope = make_envelope(bubble.alice)
            answer = await raw_deposit(server, bubble.gateway, envelope)
            assert (answer.status, answer.error()) == (500, "internal error")
            async with RelayClient(server.url) as client:
                with pytest.raises(RelayUnavailable, match="500"):
                    await client.deposit(envelope, bubble.gateway)
        finally:
            await server.stop()
            storage.close()

    with caplog.at_level(logging.ERROR, logger="sealgate.relay"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "event=internal_error method=POST route=/v1/envelopes error=OSError"
    ] * 2


@contextlib.asynccontextmanager
async def fake_relay(routes: web.RouteTableDef) -> AsyncIterator[str]:
    """A misbehaving HTTP server on 127.0.0.1:0, to see how the client copes."""
    app = web.Application()
    app.add_routes(routes)
    async with serve_app(app) as url:
        yield url


def test_client_maps_misbehaving_relays(bubble: Bubble) -> None:
    other = make_envelope(bubble.bob)
    routes = web.RouteTableDef()
    release: list[asyncio.Event] = []

    @routes.get("/v1/health")
    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"error": "overloaded"}, status=503)

    @routes.get("/v1/mailboxes/{mailbox_id}/envelopes")
    async def slow(request: web.Request) -> web.Response:
        await release[0].wait()
        return web.json_response({"envelopes": []})

    @routes.get("/v1/mailboxes/{mailbox_id}/envelopes/{envelope_id}")
    async def wrong(request: web.Request) -> web.Response:
        return web.Response(body=other)

    @routes.get("/v1/directory")
    async def garbled(request: web.Request) -> web.Response:
        return web.Response(body=b'{"records": [{"lookup_id": "zz"}]}')

    @routes.post("/v1/envelopes")
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    @routes.put("/v1/directory/{lookup_id}")
    async def refuses(request: web.Request) -> web.Response:
        return web.Response(status=422, text="\x1b[31m" + "x" * 1000)

    async def scenario() -> None:
        release.append(asyncio.Event())
        async with fake_relay(routes) as url, RelayClient(url, timeout=0.5) as client:
            assert await client.health() is False
            with pytest.raises(RelayUnavailable, match="TimeoutError"):
                await client.list(bubble.alice.mailbox)
            release[0].set()
            with pytest.raises(RelayUnavailable, match="different envelope"):
                await client.fetch(bubble.alice.mailbox, os.urandom(16))
            with pytest.raises(RelayUnavailable, match="malformed directory record"):
                await client.directory()
            with pytest.raises(RelayUnavailable, match="302"):
                await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            with pytest.raises(RelayRejected) as caught:
                await client.publish(make_record(bubble.root, os.urandom(32), b"s"))
            assert (caught.value.status, caught.value.reason) == (422, "HTTP 422")

    run(scenario())


def test_client_refuses_oversize_answers(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice, 10_000)
            await client.deposit(envelope, bubble.gateway)
            [info] = await client.list(bubble.alice.mailbox)
            assert info == EnvelopeInfo(envelope_id_of(envelope), len(envelope), info.received)
            async with RelayClient(server.url, max_response_bytes=5000) as small:
                with pytest.raises(RelayUnavailable, match="too large"):
                    await small.fetch(bubble.alice.mailbox, envelope_id_of(envelope))
                assert await small.list(bubble.alice.mailbox) == [info]

    run(scenario())


def test_client_rejects_bad_arguments() -> None:
    for url in ("ftp://relay.example", "relay.example", "http://relay.example/?a=b"):
        with pytest.raises(ValueError, match="relay url"):
            RelayClient(url)


def test_serve_forever_runs_until_cancelled(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = RelayConfig(home=tmp_path, port=port, trusted_roots=(bubble.root.public,),
                             db=bubble.db)
        task = asyncio.create_task(serve_forever(config))
        async with RelayClient(f"http://127.0.0.1:{port}", timeout=2) as client:
            for _ in range(100):
                if await client.health():
                    break
                await asyncio.sleep(0.02)
            envelope = make_envelope(bubble.alice)
            await client.deposit(envelope, bubble.gateway)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await client.health() is False
        storage = bubble.store.open()  # the relay closed it: it opens again
        try:
            assert storage.get(bubble.alice.public.mailbox_id, envelope_id_of(envelope)) == envelope
        finally:
            storage.close()

    run(scenario())


def test_port_in_use_fails_start_cleanly(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path / "first", bubble) as (first, client):
            config = RelayConfig(home=tmp_path / "second", port=first.port)
            second = RelayServer(config)
            with pytest.raises(OSError):
                await second.start()
            with pytest.raises(RuntimeError, match="not started"):
                _ = second.port
            await second.stop()  # nothing left to stop: still fine
            assert await client.health()

    run(scenario())
