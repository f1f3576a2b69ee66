"""Batch deposits (`POST /v1/envelope-batches`) against a real RelayServer on 127.0.0.1,
once per storage backend: one outcome per envelope, the same refusals as a single
deposit for the request as a whole, limits and framing, a quota, held listings and
metrics."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from bridge.envelope_batch import BatchOutcome, pack_batch
from bridge.errors import BatchUnsupported, RelayRejected, RelayUnavailable
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.auth import sign_deposit
from bridge.relay.client import RelayClient
from bridge.relay.server import RelayServer
from bridge.revocation import GatewayRevocation
from tests.integration.test_relay import (
    Answer,
    Bubble,
    envelope_id_of,
    fake_relay,
    make_envelope,
    raw,
    relay,
    run,
)
from tests.relay_backends import Backend

pytestmark = pytest.mark.integration

BATCH = "/v1/envelope-batches"


@pytest.fixture
def bubble(relay_backend: Backend) -> Bubble:
    root = RootKey.generate()
    return Bubble(root, GatewayCredential.issue(root), AccountKeys.generate(),
                  AccountKeys.generate(), relay_backend)


async def raw_batch(
    server: RelayServer, credential: GatewayCredential, body: bytes, signed: bytes | None = None
) -> Answer:
    """POST `body` to the batch route, signed over `signed` (default: the body itself)."""
    headers = sign_deposit(credential, BATCH, body if signed is None else signed, time.time())
    return await raw(server, "POST", BATCH, body, headers)


def test_each_envelope_gets_its_own_outcome_in_order(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        stored = make_envelope(bubble.alice)
        new = make_envelope(bubble.bob)
        conflicting = make_envelope(bubble.alice, envelope_id=envelope_id_of(stored))
        garbage = b"not an envelope at all"
        async with relay(tmp_path, bubble) as (server, client):
            await client.deposit(stored, bubble.gateway)
            batch = [new, stored, conflicting, garbage, new]
            answer = await raw_batch(server, bubble.gateway, pack_batch(batch))
            assert answer.status == 200
            results = json.loads(answer.body)["results"]
            assert [r["outcome"] for r in results] == [
                "created", "duplicate", "conflict", "malformed", "duplicate"
            ]
            assert [r.get("id") for r in results] == [
                envelope_id_of(new).hex(), envelope_id_of(stored).hex(),
                envelope_id_of(stored).hex(), None, envelope_id_of(new).hex(),
            ]
            assert set(results[3]) == {"outcome", "error"}
            # The client reads the same answer (a repeat now: all taken or refused alike).
            assert await client.deposit_many(batch, bubble.gateway) == [
                BatchOutcome.DUPLICATE, BatchOutcome.DUPLICATE, BatchOutcome.CONFLICT,
                BatchOutcome.MALFORMED, BatchOutcome.DUPLICATE,
            ]
            assert await client.fetch(bubble.bob.mailbox, envelope_id_of(new)) == new
            assert await client.fetch(bubble.alice.mailbox, envelope_id_of(stored)) == stored
            assert len(await client.list(bubble.alice.mailbox)) == 1
            assert len(await client.list(bubble.bob.mailbox)) == 1

    run(scenario())


def test_many_new_envelopes_are_stored_and_counted(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        batch = [make_envelope(bubble.alice, size=100 + n) for n in range(40)]
        async with relay(tmp_path, bubble) as (server, client):
            outcomes = await client.deposit_many(batch, bubble.gateway)
            assert outcomes == [BatchOutcome.CREATED] * 40
            listed = {info.envelope_id for info in await client.list(bubble.alice.mailbox)}
            assert listed == {envelope_id_of(e) for e in batch}
            for envelope in batch[::7]:
                assert await client.fetch(bubble.alice.mailbox, envelope_id_of(envelope)) \
                    == envelope
            assert bubble.store.stored_total() == sum(len(e) for e in batch)
            metrics = await asyncio.to_thread(_metrics, server)
            assert "sealgate_relay_deposits_total 40.0" in metrics
            assert re.search(r'sealgate_relay_request_seconds_count\{method="POST",'
                             r'route="/v1/envelope-batches"\} 1\.0', metrics)

    run(scenario())


def test_a_held_listing_wakes_for_a_batch(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        envelope = make_envelope(bubble.alice)
        # No recheck within the test's life: only the deposit's wakeup can answer.
        async with relay(tmp_path, bubble, max_wait=3600, wait_recheck=3600) as (_, client):
            held = asyncio.create_task(client.list(bubble.alice.mailbox, wait=3600))
            await asyncio.sleep(0.2)  # let the listing be held (a late one answers at once)
            await client.deposit_many([envelope, make_envelope(bubble.bob)], bubble.gateway)
            listed = await asyncio.wait_for(held, 60)
            assert [info.envelope_id for info in listed] == [envelope_id_of(envelope)]

    run(scenario())


@pytest.mark.parametrize(("after", "reason"), [
    (None, "empty batch"),
    (b"\x00\x00", "truncated batch frame"),
    (struct.pack(">I", 0), "empty envelope in batch"),
    (struct.pack(">I", 2000) + b"x" * 100, "truncated batch frame"),
])
def test_malformed_framing_is_refused_whole(
    tmp_path: Path, bubble: Bubble, after: bytes | None, reason: str
) -> None:
    """A good frame followed by bad framing (or no frame at all): 400, nothing stored."""
    async def scenario() -> None:
        body = b"" if after is None else pack_batch([make_envelope(bubble.alice)]) + after
        async with relay(tmp_path, bubble) as (server, client):
            answer = await raw_batch(server, bubble.gateway, body)
            assert (answer.status, answer.error()) == (400, reason)
            assert await client.list(bubble.alice.mailbox) == []

    run(scenario())


@pytest.mark.parametrize(("settings", "count", "size", "reason"), [
    ({"max_batch_envelopes": 2}, 3, 100, "too many envelopes in batch"),
    ({"max_batch_bytes": 4096}, 3, 2000, "request body too large"),
    ({"max_envelope_bytes": 1000}, 2, 1000, "envelope in batch too large"),
])
def test_a_batch_over_a_limit_gets_413(
    tmp_path: Path, bubble: Bubble, settings: dict[str, int], count: int, size: int,
    reason: str,
) -> None:
    async def scenario() -> None:
        batch = [make_envelope(bubble.alice, size=size) for _ in range(count)]
        async with relay(tmp_path, bubble, **settings) as (server, client):
            answer = await raw_batch(server, bubble.gateway, pack_batch(batch))
            assert (answer.status, answer.error()) == (413, reason)
            with pytest.raises(RelayRejected) as refused:
                await client.deposit_many(batch, bubble.gateway)
            assert refused.value.status == 413
            assert await client.list(bubble.alice.mailbox) == []
            assert client.takes_batches  # a 413 is not an older relay

    run(scenario())


def test_bad_signatures_and_credentials_are_refused_like_single_deposits(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        body = pack_batch([make_envelope(bubble.alice)])
        async with relay(tmp_path, bubble) as (server, client):
            answer = await raw_batch(server, bubble.gateway, body, signed=body + b"x")
            assert (answer.status, answer.error()) == (401, "bad request signature")
            answer = await raw(server, "POST", BATCH, body)
            assert (answer.status, answer.error()) == (401, "missing Sealgate-Key")
            stranger = GatewayCredential.issue(RootKey.generate())
            answer = await raw_batch(server, stranger, body)
            assert (answer.status, answer.error()) == (
                403, "gateway is not certified by a trusted root"
            )
            await client.revoke_gateway(
                GatewayRevocation.issue(bubble.root, bubble.gateway.verify_key)
            )
            answer = await raw_batch(server, bubble.gateway, body)
            assert (answer.status, answer.error()) == (403, "gateway credential is revoked")
            assert await client.list(bubble.alice.mailbox) == []

    run(scenario())


def test_an_envelope_over_the_quota_refuses_only_itself(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        small = [make_envelope(bubble.alice, size=500) for _ in range(2)]
        big = make_envelope(bubble.alice, size=3000)
        async with relay(tmp_path, bubble, quota=2500) as (server, client):
            answer = await raw_batch(server, bubble.gateway, pack_batch([small[0], big, small[1]]))
            results = json.loads(answer.body)["results"]
            assert [r["outcome"] for r in results] == ["created", "storage_full", "created"]
            assert results[1]["error"] == "envelope is larger than the relay's whole quota"
            listed = {info.envelope_id for info in await client.list(bubble.alice.mailbox)}
            assert listed == {envelope_id_of(e) for e in small}
            assert bubble.store.stored_total() == sum(len(e) for e in small)

    run(scenario())


def test_a_batch_larger_than_the_quota_purges_the_oldest_as_singles_would(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        batch = [make_envelope(bubble.alice, size=1000) for _ in range(3)]
        quota = 2 * len(batch[0])
        async with relay(tmp_path, bubble, quota=quota) as (_, client):
            assert await client.deposit_many(batch, bubble.gateway) == \
                [BatchOutcome.CREATED] * 3
            listed = {info.envelope_id for info in await client.list(bubble.alice.mailbox)}
            assert listed == {envelope_id_of(e) for e in batch[1:]}  # the first was purged
            assert bubble.store.stored_total() == quota

    run(scenario())


def _metrics(server: RelayServer) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:  # noqa: S310
        return str(r.read().decode())


def test_random_ids_in_a_batch_do_not_deadlock_on_shared_locks(
    tmp_path: Path, bubble: Bubble
) -> None:
    """Concurrent batches whose envelope ids share lock stripes, with single deposits."""
    async def scenario() -> None:
        batches = [[make_envelope(bubble.alice, size=64) for _ in range(30)] for _ in range(6)]
        singles = [make_envelope(bubble.bob, size=64) for _ in range(20)]
        async with relay(tmp_path, bubble) as (_, client):
            answers = await asyncio.gather(
                *(client.deposit_many(b, bubble.gateway) for b in batches),
                *(client.deposit(e, bubble.gateway) for e in singles),
            )
            assert answers[:6] == [[BatchOutcome.CREATED] * 30] * 6
            assert len(await client.list(bubble.alice.mailbox)) == 180
            assert len(await client.list(bubble.bob.mailbox)) == 20

    run(scenario())


def test_the_client_checks_batch_answers_and_learns_an_older_relay(bubble: Bubble) -> None:
    """A relay whose batch answers do not match the envelopes sent is unavailable; one
    that does not know the route (405 here: only GET) is asked no more."""
    batch = [make_envelope(bubble.alice), make_envelope(bubble.alice)]
    answers = [
        {"results": [{"id": envelope_id_of(batch[0]).hex(), "outcome": "created"}]},
        {"results": [{"id": envelope_id_of(batch[1]).hex(), "outcome": "created"},
                     {"id": envelope_id_of(batch[0]).hex(), "outcome": "created"}]},
        {"results": [{"id": envelope_id_of(e).hex(), "outcome": "stored"} for e in batch]},
    ]
    routes = web.RouteTableDef()

    @routes.post(BATCH)
    async def misanswers(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    older = web.RouteTableDef()

    @older.get(BATCH)
    async def only_get(request: web.Request) -> web.Response:
        return web.json_response({})

    async def scenario() -> None:
        async with fake_relay(routes) as url, RelayClient(url) as client:
            for _ in range(3):
                with pytest.raises(RelayUnavailable, match="malformed relay answer"):
                    await client.deposit_many(batch, bubble.gateway)
            assert client.takes_batches
        async with fake_relay(older) as url, RelayClient(url) as client:
            with pytest.raises(BatchUnsupported) as caught:
                await client.deposit_many(batch, bubble.gateway)
            assert caught.value.status == 405
            assert not client.takes_batches
            with pytest.raises(BatchUnsupported):  # without asking again
                await client.deposit_many(batch, bubble.gateway)

    run(scenario())
