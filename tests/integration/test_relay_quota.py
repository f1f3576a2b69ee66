"""Quota, tombstones and envelope status over real sockets: an in-process RelayServer for
the HTTP answers (on both storage backends), and a `sealgate relay serve --quota` process
under concurrent deposits (SQLite + files on a small tmpfs; two processes on one
PostgreSQL database are in test_relay_postgres.py)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from bridge.envelope import OUTER_HEADER_LEN
from bridge.errors import RelayRejected, RelayUnavailable
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.auth import sign_gateway_request, sign_request
from bridge.relay.client import DepositStatus, RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from bridge.relay.storage import HOUR, coarse_hour
from bridge.revocation import GatewayRevocation
from tests.bubble_processes import Service, free_port, sealgate
from tests.integration.test_relay import (
    Bubble,
    envelope_id_of,
    make_envelope,
    raw,
    raw_deposit,
    relay,
    run,
)
from tests.relay_backends import Backend
from tests.tmpfs import small_tmpfs

pytestmark = pytest.mark.integration


def keys(backend: Backend) -> Bubble:
    """A root, a gateway it certified, alice and bob (keys only; the relay is the test's)."""
    root = RootKey.generate()
    return Bubble(root, GatewayCredential.issue(root), AccountKeys.generate(),
                  AccountKeys.generate(), backend)


@pytest.fixture
def bubble(relay_backend: Backend) -> Bubble:
    return keys(relay_backend)


@pytest.fixture
def sqlite_bubble(tmp_path: Path) -> Bubble:
    return keys(Backend("sqlite", tmp_path, None))

SIZE = 1000
ENVELOPE_BYTES = OUTER_HEADER_LEN + SIZE


def test_status_tells_the_depositing_gateway_what_became_of_its_envelopes(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, quota=3 * ENVELOPE_BYTES) as (server, client):
            envelopes = [make_envelope(bubble.alice, SIZE) for _ in range(4)]
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            first, second, *_ = (envelope_id_of(e) for e in envelopes)
            purged = await client.envelope_status(first, bubble.gateway)
            assert purged.status == "purged" and purged.hour is not None
            assert purged.hour % HOUR == 0 and purged.hour <= time.time()
            pending = await client.envelope_status(second, bubble.gateway)
            assert pending == DepositStatus("pending", None)
            await client.ack(bubble.alice.mailbox, second)
            delivered = await client.envelope_status(second, bubble.gateway)
            assert delivered.status == "delivered"
            # Another certified gateway learns nothing about these envelopes.
            stranger = GatewayCredential.issue(bubble.root)
            for envelope_id in (first, second, envelope_id_of(envelopes[3])):
                answer = await client.envelope_status(envelope_id, stranger)
                assert answer == DepositStatus("unknown", None)
            # Revoked: refused like its deposits.
            stranger_key = bytes(stranger.signing_key.verify_key)
            revocation = GatewayRevocation.issue(bubble.root, stranger_key)
            await client.revoke_gateway(revocation)
            with pytest.raises(RelayRejected) as caught:
                await client.envelope_status(first, stranger)
            assert (caught.value.status, caught.value.reason) == (
                403, "gateway credential is revoked"
            )

            path = f"/v1/envelopes/{first.hex()}/status"
            unsigned = await raw(server, "GET", path)
            assert (unsigned.status, unsigned.error()) == (401, "missing Sealgate-Key")
            headers = sign_request(bubble.gateway.signing_key, "GET", path, b"", time.time())
            no_credential = await raw(server, "GET", path, headers=headers)
            assert (no_credential.status, no_credential.error()) == (
                401, "missing Sealgate-Credential"
            )
            mailbox_key = sign_request(bubble.alice.mailbox, "GET", path, b"", time.time())
            mailbox_key["Sealgate-Credential"] = "A" * 86 + "=="
            assert (await raw(server, "GET", path, headers=mailbox_key)).status == 403
            malformed = await raw(server, "GET", "/v1/envelopes/xyz/status")
            assert (malformed.status, malformed.error()) == (400, "malformed envelope id")

    run(scenario())


def test_an_envelope_larger_than_the_quota_gets_507(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble, quota=2 * ENVELOPE_BYTES) as (server, client):
            kept = make_envelope(bubble.alice, SIZE)
            await client.deposit(kept, bubble.gateway)
            answer = await raw_deposit(server, bubble.gateway, make_envelope(bubble.bob, 3 * SIZE))
            assert answer.status == 507
            assert answer.error() == "envelope is larger than the relay's whole quota"
            with pytest.raises(RelayUnavailable):  # another relay may have room: not final
                await client.deposit(make_envelope(bubble.bob, 3 * SIZE), bubble.gateway)
            assert await client.fetch(bubble.alice.mailbox, envelope_id_of(kept)) == kept

    run(scenario())


def test_concurrent_deposits_at_the_quota_of_a_relay_process(
    tmp_path: Path, sqlite_bubble: Bubble
) -> None:
    bubble = sqlite_bubble
    quota = 8 * ENVELOPE_BYTES
    root_file = tmp_path / "root.pub"
    root_file.write_text(bubble.root.public.hex())
    port = free_port()
    home = tmp_path / "relay"
    service = Service(
        "relay",
        ["relay", "serve", "--home", str(home), "--listen", f"127.0.0.1:{port}",
         "--trust-root", str(root_file), "--quota", f"{quota}B", "--retention", "1d"],
        tmp_path / "relay.log", [port],
    )
    # While deposits run, a watcher samples how much of the file system that holds the
    # envelope files is used: one statvfs is one consistent view of every file on it
    # (temporary files too), which a directory walk is not. Each envelope takes one block.
    done = threading.Event()
    peak_blocks = 0

    def watch(envelopes: Path) -> None:
        nonlocal peak_blocks
        while not done.is_set():
            info = os.statvfs(envelopes)
            peak_blocks = max(peak_blocks, info.f_blocks - info.f_bfree)

    async def deposit_all(url: str) -> None:
        envelopes = [
            make_envelope(bubble.alice if n % 2 else bubble.bob, SIZE) for n in range(120)
        ]
        clients = [RelayClient(url) for _ in range(20)]
        try:
            await asyncio.gather(*(
                clients[n % 20].deposit(envelope, bubble.gateway)
                for n, envelope in enumerate(envelopes)
            ))
            pending: dict[bytes, bytes] = {}
            for envelope in envelopes:
                envelope_id = envelope_id_of(envelope)
                answer = await clients[0].envelope_status(envelope_id, bubble.gateway)
                assert answer.status in ("pending", "purged")
                if answer.status == "pending":
                    pending[envelope_id] = envelope
            for account in (bubble.alice, bubble.bob):
                for info in await clients[0].list(account.mailbox):
                    fetched = await clients[0].fetch(account.mailbox, info.envelope_id)
                    assert fetched == pending.pop(info.envelope_id)  # whole, listed once
            assert pending == {}
        finally:
            for client in clients:
                await client.close()

    home.mkdir()
    with small_tmpfs(home / "envelopes", "1m") as envelopes:
        service.start()
        watcher = threading.Thread(target=watch, args=(envelopes,))
        watcher.start()
        try:
            run(deposit_all(f"http://127.0.0.1:{port}"))
        finally:
            done.set()
            watcher.join()
            assert service.stop() == 0
        assert ENVELOPE_BYTES <= os.statvfs(envelopes).f_frsize
        assert 0 < peak_blocks <= 8
        files = [p for p in envelopes.rglob("*") if p.is_file()]
        assert len(files) == 8 and sum(p.stat().st_size for p in files) == quota
        assert not [p for p in files if p.name.endswith(".tmp")]


def test_status_answers_are_json_with_only_status_and_hour(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice, SIZE)
            await client.deposit(envelope, bubble.gateway)
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelope))
            path = f"/v1/envelopes/{envelope_id_of(envelope).hex()}/status"
            headers = sign_gateway_request(bubble.gateway, "GET", path, b"", time.time())
            answer = await raw(server, "GET", path, headers=headers)
            data = json.loads(answer.body)
            assert answer.status == 200 and set(data) == {"status", "hour"}
            assert data["status"] == "delivered" and data["hour"] % HOUR == 0

    run(scenario())


def test_a_running_relay_sweeps_expired_envelopes(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        old = make_envelope(bubble.alice, SIZE)
        month_ago = coarse_hour(time.time() - 31 * 86400)
        storage = bubble.store.open(retention=30 * 86400)
        storage.put(bubble.alice.public.mailbox_id, envelope_id_of(old), old, month_ago,
                    bytes(bubble.gateway.signing_key.verify_key))
        config = RelayConfig(home=tmp_path, trusted_roots=(bubble.root.public,))
        server = RelayServer(config, storage)
        await server.start()  # the first sweep runs as the relay starts
        try:
            async with RelayClient(server.url) as client:
                deadline = time.monotonic() + 20
                while (answer := await client.envelope_status(
                        envelope_id_of(old), bubble.gateway)).status == "pending":
                    assert time.monotonic() < deadline, "the sweep never ran"
                    await asyncio.sleep(0.05)
                assert answer.status == "expired"
                assert await client.list(bubble.alice.mailbox) == []
        finally:
            await server.stop()
            storage.close()

    run(scenario())


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--quota", "lots", "setting 'quota': expected a size like 20GiB, got 'lots'"),
        ("--quota", "1.5B", "setting 'quota': '1.5B' is not a whole number of units"),
        ("--retention", "forever", "setting 'retention': expected a duration like 30d"),
        ("--retention", "10m", "retention must be an integer from 3600"),
    ],
)
def test_relay_serve_refuses_nonsense_units_in_one_line(
    tmp_path: Path, sqlite_bubble: Bubble, flag: str, value: str, message: str
) -> None:
    bubble = sqlite_bubble
    root_file = tmp_path / "root.pub"
    root_file.write_text(bubble.root.public.hex())
    result = sealgate("relay", "serve", "--home", tmp_path / "relay", "--listen", "127.0.0.1:0",
                      "--trust-root", root_file, flag, value, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"sealgate: error: {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
