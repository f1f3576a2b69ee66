"""A gateway's directory replica against real relays (RelayServer on 127.0.0.1:0).

One honest relay holds the newest record; a second relay replays an older,
genuinely root-signed one. Neither sync nor live lookup may move the gateway back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.directory import DirectoryEntry, DirectoryRecord, make_record
from bridge.keys import AccountKeys, RootKey
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.recipients import REPLICA_READ_SECONDS, Recipients, RevokedAddress
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache

pytestmark = pytest.mark.integration

ROOT = RootKey.generate()
KEY = bytes(range(32))
BOB = AccountKeys.generate()
V1 = DirectoryEntry(address="bob@test.bubble", keys=BOB.public, relays=("http://r",),
                    issued_at=1_700_000_000)
ROTATED = BOB.rotated()
V2 = dataclasses.replace(V1, keys=ROTATED.public, version=2,
                         previous_signing=(BOB.public.signing_key,))
V3_REVOKED = dataclasses.replace(V2, version=3, revoked=True)


@contextlib.asynccontextmanager
async def relay_holding(home: Path, *records: DirectoryRecord) -> AsyncIterator[RelayClient]:
    server = RelayServer(RelayConfig(home=home, trusted_roots=(ROOT.public,)))
    await server.start()
    client = RelayClient(server.url)
    try:
        for record in records:
            await client.publish(record)
        yield client
    finally:
        await client.close()
        await server.stop()


def recipients(tmp_path: Path, *relays: RelayClient, **options: Any) -> Recipients:
    engine = open_engine(f"sqlite:///{tmp_path}/gateway.db")
    return Recipients(DirectoryCache(engine), relays, KEY, (ROOT.public,), **options)


def test_a_record_another_process_stored_is_read_within_seconds(tmp_path: Path) -> None:
    """RCPT does not read the store every time; what another process writes into the
    replica (a CLI rotation) is used once REPLICA_READ_SECONDS have passed."""
    old, new = make_record(V1, ROOT, KEY), make_record(V2, ROOT, KEY)
    now = [0.0]

    async def scenario() -> None:
        async with relay_holding(tmp_path / "relay", old) as relay:
            gateway = recipients(tmp_path, relay, clock=lambda: now[0])
            await gateway.sync()
            assert (await gateway.resolve(V1.address)).version == 1
            other = DirectoryCache(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
            assert other.put_many([new]) == 1
            now[0] += REPLICA_READ_SECONDS / 2
            assert (await gateway.resolve(V1.address)).version == 1
            now[0] += REPLICA_READ_SECONDS / 2
            assert (await gateway.resolve(V1.address)).version == 2

    asyncio.run(scenario())


def test_a_relay_replaying_an_old_record_does_not_roll_the_replica_back(tmp_path: Path) -> None:
    old, new = make_record(V1, ROOT, KEY), make_record(V2, ROOT, KEY)

    async def scenario() -> None:
        async with (
            relay_holding(tmp_path / "honest", old, new) as honest,
            relay_holding(tmp_path / "stale", old) as stale,
        ):
            gateway = recipients(tmp_path, honest)
            assert await gateway.sync() == 1
            assert (await gateway.resolve(V1.address)).keys == ROTATED.public
            replaying = recipients(tmp_path, stale)  # same store, only the stale relay
            assert await replaying.sync() == 0
            assert (await replaying.resolve(V1.address)).version == 2
            assert (await replaying.refresh(V1.address)).version == 2
            # A fresh gateway whose first relay is the stale one: RCPT takes the first
            # answer, but a refresh or the next sync moves it to the newest, for good.
            (tmp_path / "fresh").mkdir()
            fresh = recipients(tmp_path / "fresh", stale, honest)
            assert (await fresh.refresh(V1.address)).version == 2
            (tmp_path / "synced").mkdir()
            synced = recipients(tmp_path / "synced", stale, honest)
            await synced.sync()
            assert (await synced.resolve(V1.address)).version == 2

    asyncio.run(scenario())


def test_refresh_finds_a_rotation_the_replica_has_not_synced(tmp_path: Path) -> None:
    old, new = make_record(V1, ROOT, KEY), make_record(V2, ROOT, KEY)

    async def scenario() -> None:
        async with relay_holding(tmp_path / "relay", old) as relay:
            gateway = recipients(tmp_path, relay)
            await gateway.sync()
            await relay.publish(new)  # the sender rotated after our last sync
            assert (await gateway.resolve(V1.address)).version == 1
            refreshed = await gateway.refresh(V1.address)
            assert refreshed.signing_key_status(ROTATED.public.signing_key).accepted
            assert refreshed.signing_key_status(BOB.public.signing_key).accepted  # in flight
            assert (await gateway.resolve(V1.address)).version == 2

    asyncio.run(scenario())


def test_a_revoked_address_is_refused_and_stays_refused(tmp_path: Path) -> None:
    records = [make_record(e, ROOT, KEY) for e in (V1, V2, V3_REVOKED)]

    async def scenario() -> None:
        async with (
            relay_holding(tmp_path / "honest", *records) as honest,
            relay_holding(tmp_path / "stale", records[1]) as stale,
        ):
            gateway = recipients(tmp_path, honest)
            await gateway.sync()
            with pytest.raises(RevokedAddress):
                await gateway.resolve(V1.address)
            replaying = recipients(tmp_path, stale)
            await replaying.sync()
            with pytest.raises(RevokedAddress):
                await replaying.resolve(V1.address)
            assert (await replaying.refresh(V1.address)).revoked

    asyncio.run(scenario())
