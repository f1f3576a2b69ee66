"""The delivery worker's batch deposits: a pass's entries reach a relay in few requests,
and every single-deposit behaviour holds: failover for the entries a relay did not
take, a dead first relay, an older relay without the batch route.

Real SQLite outbox, real relays on 127.0.0.1 (in process); the older relay is the real
relay application with its batch route answered 404, as a relay that predates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.envelope import MIN_BUCKET, OuterHeader
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import build_app
from bridge.relay.storage import SqliteFileStorage
from bridge.revocation import GatewayRevocation
from gateway.delivery import DeliveryWorker
from gateway.store.db import open_engine
from gateway.store.outbox import Outbox
from tests.bubble_processes import free_port
from tests.relay_servers import relays, serve_app

pytestmark = pytest.mark.integration

BATCH_COUNT = re.compile(
    r'sealgate_relay_request_seconds_count\{method="POST",route="/v1/envelope-batches"\} '
    r"([0-9.]+)"
)
SINGLE_COUNT = re.compile(
    r'sealgate_relay_request_seconds_count\{method="POST",route="/v1/envelopes"\} ([0-9.]+)'
)


class RecordingOutbox(Outbox):
    """The real outbox, remembering the relay each delivered entry was stamped with."""

    taken_by: list[str]

    def delivered(
        self, *entry_ids: int, relays: Mapping[int, str] | None = None,
        check_at: datetime | None = None, forget: Sequence[int] = (),
    ) -> None:
        super().delivered(*entry_ids, relays=relays, check_at=check_at, forget=forget)
        self.taken_by += (relays or {}).values()


def outbox_at(path: Path) -> RecordingOutbox:
    outbox = RecordingOutbox(open_engine(f"sqlite:///{path}"))
    outbox.taken_by = []
    return outbox


def envelope(mailbox_id: bytes, envelope_id: bytes | None = None) -> tuple[bytes, bytes]:
    envelope_id = envelope_id or os.urandom(16)
    header = OuterHeader(envelope_id, mailbox_id, MIN_BUCKET)
    return envelope_id, header.pack() + os.urandom(MIN_BUCKET)


def requests(server_url: str, route: re.Pattern[str]) -> int:
    with urllib.request.urlopen(f"{server_url}/metrics", timeout=10) as r:  # noqa: S310
        found = route.search(r.read().decode())
    return 0 if found is None else int(float(found.group(1)))


async def stored_ids(client: RelayClient, account: AccountKeys) -> list[bytes]:
    return [info.envelope_id for info in await client.list(account.mailbox)]


def test_a_pass_deposits_its_entries_in_batches(tmp_path: Path) -> None:
    root = RootKey.generate()
    bob = AccountKeys.generate()

    async def scenario() -> None:
        async with relays(tmp_path, root) as ([server], clients):
            client = clients[server.url]
            outbox = outbox_at(tmp_path / "gateway.db")
            items = [envelope(bob.public.mailbox_id) for _ in range(30)]
            outbox.put([(i, e, (server.url,)) for i, e in items])
            worker = DeliveryWorker(outbox, GatewayCredential.issue(root), lambda url: client,
                                    retry_initial=60, retry_max=60)
            assert await worker.run_once()
            assert outbox.pending_count() == 0
            assert sorted(await stored_ids(client, bob)) == sorted(i for i, _ in items)
            assert set(outbox.taken_by) == {server.url}
            assert len(outbox.taken_by) == 30
            assert await asyncio.to_thread(requests, server.url, BATCH_COUNT) == 1
            assert await asyncio.to_thread(requests, server.url, SINGLE_COUNT) == 0

    asyncio.run(scenario())


def test_entries_a_relay_refuses_in_a_batch_fail_over_to_the_next(tmp_path: Path) -> None:
    """The first relay holds other bytes under one entry's id: that entry alone goes on
    to the second relay, the rest stay on the first."""
    root = RootKey.generate()
    bob = AccountKeys.generate()
    credential = GatewayCredential.issue(root)

    async def scenario() -> None:
        async with relays(tmp_path, root, 2) as ([first, second], clients):
            items = [envelope(bob.public.mailbox_id) for _ in range(10)]
            clash_id = items[3][0]
            await clients[first.url].deposit(envelope(bob.public.mailbox_id, clash_id)[1],
                                             credential)
            outbox = outbox_at(tmp_path / "gateway.db")
            outbox.put([(i, e, (first.url, second.url)) for i, e in items])
            worker = DeliveryWorker(outbox, credential, clients.__getitem__,
                                    retry_initial=60, retry_max=60)
            await worker.run_once()
            assert outbox.pending_count() == 0
            assert sorted(await stored_ids(clients[first.url], bob)) == \
                sorted(i for i, _ in items)  # nine of ours and the other bytes under clash_id
            assert await stored_ids(clients[second.url], bob) == [clash_id]
            by_id = {i: e for i, e in items}
            assert await clients[second.url].fetch(bob.mailbox, clash_id) == by_id[clash_id]
            assert sorted(outbox.taken_by) == sorted([first.url] * 9 + [second.url])

    asyncio.run(scenario())


def test_a_dead_first_relay_costs_one_try_and_the_next_takes_everything(
    tmp_path: Path,
) -> None:
    root = RootKey.generate()
    bob = AccountKeys.generate()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario() -> None:
        async with relays(tmp_path, root, dead=[dead]) as ([server], clients):
            outbox = outbox_at(tmp_path / "gateway.db")
            items = [envelope(bob.public.mailbox_id) for _ in range(12)]
            outbox.put([(i, e, (dead, server.url)) for i, e in items])
            worker = DeliveryWorker(outbox, GatewayCredential.issue(root), clients.__getitem__,
                                    retry_initial=60, retry_max=60)
            assert await worker.run_once()
            assert outbox.pending_count() == 0
            assert sorted(await stored_ids(clients[server.url], bob)) == \
                sorted(i for i, _ in items)
            assert set(outbox.taken_by) == {server.url}
            assert not worker.health.ready(dead)  # set aside for the next passes
            # What the dead relay did not take went on to the live one in a batch.
            assert await asyncio.to_thread(requests, server.url, BATCH_COUNT) == 1

            more = [envelope(bob.public.mailbox_id) for _ in range(12)]
            outbox.put([(i, e, (dead, server.url)) for i, e in more])
            assert await worker.run_once()  # straight to the live relay, in a batch
            assert len(await stored_ids(clients[server.url], bob)) == 24
            assert await asyncio.to_thread(requests, server.url, BATCH_COUNT) == 2
            assert await asyncio.to_thread(requests, server.url, SINGLE_COUNT) == 0

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def older_relay(home: Path, root: RootKey, batch_tries: list[int]) -> AsyncIterator[str]:
    """The real relay application, but its batch route is unknown (404), as on a relay
    from before it; each batch request is counted in `batch_tries`."""
    storage = SqliteFileStorage(home)
    app = build_app(RelayConfig(home=home, trusted_roots=(root.public,)), storage)

    @web.middleware
    async def no_batches(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/envelope-batches":
            batch_tries.append(1)
            return web.json_response({"error": "not found"}, status=404)
        return await handler(request)

    app.middlewares.insert(0, no_batches)
    try:
        async with serve_app(app) as url:
            yield url
    finally:
        storage.close()


def test_an_older_relay_without_batches_gets_single_deposits_from_then_on(
    tmp_path: Path,
) -> None:
    root = RootKey.generate()
    bob = AccountKeys.generate()

    async def scenario() -> None:
        batch_tries: list[int] = []
        async with older_relay(tmp_path / "relay", root, batch_tries) as url:
            client = RelayClient(url, timeout=30)
            try:
                outbox = outbox_at(tmp_path / "gateway.db")
                worker = DeliveryWorker(outbox, GatewayCredential.issue(root),
                                        lambda _: client, retry_initial=60, retry_max=60)
                sent: list[bytes] = []
                for _ in range(2):
                    items = [envelope(bob.public.mailbox_id) for _ in range(10)]
                    outbox.put([(i, e, (url,)) for i, e in items])
                    sent += [i for i, _ in items]
                    assert await worker.run_once()
                    assert outbox.pending_count() == 0
                stored = await stored_ids(client, bob)
                assert sorted(stored) == sorted(sent)  # each exactly once
                assert len(outbox.taken_by) == 20
                assert batch_tries == [1]  # asked once, then single deposits
                assert not client.takes_batches
            finally:
                await client.close()

    asyncio.run(scenario())


def test_a_batch_a_relay_refuses_whole_goes_on_to_the_next_in_a_batch(tmp_path: Path) -> None:
    """The first relay has revoked this gateway (403 for the batch): the entries go on
    to their second relay, together, and the first is not set aside (a 4xx)."""
    root = RootKey.generate()
    bob = AccountKeys.generate()
    credential = GatewayCredential.issue(root)

    async def scenario() -> None:
        async with relays(tmp_path, root, 2) as ([first, second], clients):
            await clients[first.url].revoke_gateway(
                GatewayRevocation.issue(root, credential.verify_key)
            )
            items = [envelope(bob.public.mailbox_id) for _ in range(8)]
            outbox = outbox_at(tmp_path / "gateway.db")
            outbox.put([(i, e, (first.url, second.url)) for i, e in items])
            worker = DeliveryWorker(outbox, credential, clients.__getitem__,
                                    retry_initial=60, retry_max=60)
            assert await worker.run_once()
            assert outbox.pending_count() == 0
            assert await stored_ids(clients[first.url], bob) == []
            assert sorted(await stored_ids(clients[second.url], bob)) == \
                sorted(i for i, _ in items)
            assert outbox.taken_by == [second.url] * 8
            assert await asyncio.to_thread(requests, second.url, BATCH_COUNT) == 1
            assert await asyncio.to_thread(requests, second.url, SINGLE_COUNT) == 0
            assert worker.health.ready(first.url)

    asyncio.run(scenario())
