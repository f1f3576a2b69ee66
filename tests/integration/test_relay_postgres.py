"""Two `sealgate relay serve --db` processes on one PostgreSQL database, at once.

Twenty clients deposit through both relays at the quota while a recipient's gateway
lists, fetches and acknowledges through both; a watcher samples the database the
whole time. What must hold across the processes: stored bytes never exceed the
quota, every envelope is stored whole or not at all and counted once, and each
relay sees the other's tombstones, acknowledgements and gateway revocations.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.envelope import OUTER_HEADER_LEN
from bridge.errors import RelayRejected
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.client import RelayClient
from bridge.relay.storage.postgres import engine_url
from bridge.relay.storage.schema import SCHEMA_VERSION
from bridge.revocation import GatewayRevocation
from tests.bubble_processes import Service, free_port, sealgate
from tests.integration.test_relay import (
    Bubble,
    envelope_id_of,
    make_envelope,
    raw_deposit,
    relay,
    run,
)
from tests.postgres import fresh_schema
from tests.relay_backends import Backend

pytestmark = pytest.mark.integration

SIZE = 1000
ENVELOPE_BYTES = OUTER_HEADER_LEN + SIZE
QUOTA = 8 * ENVELOPE_BYTES
DEPOSITS = 120


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    with fresh_schema("sg_relay_two") as url:
        yield url


def start_relays(tmp_path: Path, bubble: Bubble, db: str, count: int) -> list[Service]:
    root_file = tmp_path / "root.pub"
    root_file.write_text(bubble.root.public.hex())
    relays = []
    for n in range(count):
        port = free_port()
        relays.append(Service(
            f"relay{n}",
            ["relay", "serve", "--home", str(tmp_path / f"relay{n}"),
             "--listen", f"127.0.0.1:{port}", "--trust-root", str(root_file),
             "--quota", f"{QUOTA}B", "--retention", "1d", "--db", db],
            tmp_path / f"relay{n}.log", [port],
        ))
    try:
        for service in relays:
            service.start()
    except BaseException:
        for service in relays:
            service.kill()
        raise
    return relays


def url_of(service: Service) -> str:
    return f"http://127.0.0.1:{service.ports[0]}"


class Watcher:
    """Samples, in one statement each time, the bytes stored and the usage counters."""

    def __init__(self, db: str) -> None:
        self._engine = sa.create_engine(engine_url(db))
        self._done = threading.Event()
        self.peak_stored = 0
        self.peak_counted = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._watch)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self._engine.dispose()

    def _watch(self) -> None:
        query = sa.text(
            "SELECT (SELECT coalesce(sum(length(data)), 0) FROM envelope_bytes),"
            " (SELECT coalesce(sum(bytes), 0) FROM relay_usage)"
        )
        with self._engine.connect() as conn:
            while not self._done.is_set():
                stored, counted = conn.execute(query).one()
                conn.commit()
                self.peak_stored = max(self.peak_stored, int(stored))
                self.peak_counted = max(self.peak_counted, int(counted))
                self.samples += 1


def totals(db: str) -> tuple[int, int, int, int]:
    """(envelope rows, their sizes, bytes rows' lengths, usage counter) now."""
    engine = sa.create_engine(engine_url(db))
    try:
        with engine.connect() as conn:
            return tuple(int(v) for v in conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM envelopes),"
                " (SELECT coalesce(sum(size), 0) FROM envelopes),"
                " (SELECT coalesce(sum(length(data)), 0) FROM envelope_bytes"
                "  JOIN envelopes USING (envelope_id)),"
                " (SELECT coalesce(sum(bytes), 0) FROM relay_usage)"
            )).one())  # type: ignore[return-value]
    finally:
        engine.dispose()


def test_two_relay_processes_share_quota_purges_tombstones_and_acks(
    tmp_path: Path, database: str
) -> None:
    root = RootKey.generate()
    bubble = Bubble(root, GatewayCredential.issue(root), AccountKeys.generate(),
                    AccountKeys.generate(), Backend("postgresql", tmp_path, database))
    envelopes = [make_envelope(bubble.alice if n % 2 else bubble.bob, SIZE)
                 for n in range(DEPOSITS)]
    by_id = {envelope_id_of(e): e for e in envelopes}
    delivered: dict[bytes, bytes] = {}  # what alice's reader fetched and acknowledged

    async def exchange(urls: list[str]) -> None:
        # Deposits at the quota wait their turn for the quota lock: on a loaded machine
        # that can take longer than a gateway's usual timeout, and this test is about
        # what is stored, not how fast.
        depositors = [RelayClient(urls[n % 2], timeout=120) for n in range(20)]
        readers = [RelayClient(url, timeout=120) for url in urls]
        deposits_done = asyncio.Event()

        async def read_alice(reader: RelayClient) -> None:
            # Lists through one relay, fetches and acknowledges what it found; the
            # other relay's reader does the same, so they race for the same envelopes.
            while True:
                finished = deposits_done.is_set()
                for info in await reader.list(bubble.alice.mailbox):
                    try:
                        data = await reader.fetch(bubble.alice.mailbox, info.envelope_id)
                    except RelayRejected as exc:  # purged, or taken by the other reader
                        assert exc.status == 404
                        continue
                    assert data == by_id[info.envelope_id]  # whole
                    await reader.ack(bubble.alice.mailbox, info.envelope_id)
                    delivered[info.envelope_id] = data
                if finished:
                    return
                await asyncio.sleep(0.01)

        try:
            reading = [asyncio.create_task(read_alice(r)) for r in readers]
            await asyncio.gather(*(
                depositors[n % 20].deposit(envelope, bubble.gateway)
                for n, envelope in enumerate(envelopes)
            ))
            deposits_done.set()
            await asyncio.gather(*reading)

            # Both relays give the same answer for every envelope.
            async def status(envelope_id: bytes) -> str:
                seen = {(await r.envelope_status(envelope_id, bubble.gateway)).status
                        for r in readers}
                assert len(seen) == 1, seen
                return seen.pop()

            answers = dict(zip(by_id, await asyncio.gather(*map(status, by_id)), strict=True))
            # Delivered is what a reader fetched and acknowledged; what it fetched and a
            # deposit purged before the acknowledgement came says purged.
            assert {envelope_id for envelope_id, status in answers.items()
                    if status == "delivered"} <= set(delivered)
            assert {answers[envelope_id] for envelope_id in delivered} <= {"delivered", "purged"}
            assert set(answers.values()) <= {"pending", "purged", "delivered"}
            pending = {i for i, status in answers.items() if status == "pending"}
            assert "purged" in answers.values()
            # Bob's pending envelopes are listed alike by both relays, and fetched whole
            # through the relay that did not store them as through the one that did.
            listings = [{i.envelope_id for i in await r.list(bubble.bob.mailbox)}
                        for r in readers]
            assert listings[0] == listings[1] == pending
            for envelope_id in pending:
                for reader in readers:
                    fetched = await reader.fetch(bubble.bob.mailbox, envelope_id)
                    assert fetched == by_id[envelope_id]
            # An acknowledgement through one relay is a tombstone seen through the other.
            if pending:
                taken = next(iter(pending))
                await readers[0].ack(bubble.bob.mailbox, taken)
                assert (await readers[1].envelope_status(taken, bubble.gateway)).status == (
                    "delivered"
                )
                listed = await readers[1].list(bubble.bob.mailbox)
                assert taken not in {i.envelope_id for i in listed}
            # A gateway revoked through one relay is refused by the other at once.
            other = GatewayCredential.issue(bubble.root)
            await readers[1].deposit(make_envelope(bubble.bob, SIZE), other)
            await readers[0].revoke_gateway(GatewayRevocation.issue(root, other.verify_key))
            with pytest.raises(RelayRejected) as refused:
                await readers[1].deposit(make_envelope(bubble.bob, SIZE), other)
            assert refused.value.status == 403
        finally:
            for client in depositors + readers:
                await client.close()

    relays = start_relays(tmp_path, bubble, database, 2)
    try:
        with Watcher(database) as watcher:
            run(exchange([url_of(r) for r in relays]))
        codes = [service.stop() for service in relays]
    finally:
        for service in relays:
            service.kill()
    assert codes == [0, 0]
    assert watcher.samples > 10
    assert 0 < watcher.peak_stored <= QUOTA
    assert watcher.peak_counted <= QUOTA
    count, sizes, data_bytes, counted = totals(database)
    # Counted once: the usage counters, the rows' sizes and the bytes kept agree.
    assert sizes == data_bytes == counted == count * ENVELOPE_BYTES <= QUOTA
    for service in relays:
        log = service.log.read_text()
        assert "Traceback" not in log and "internal_error" not in log


def test_relay_serve_refuses_a_bad_database_in_one_line(tmp_path: Path, database: str) -> None:
    root_file = tmp_path / "root.pub"
    root_file.write_text(RootKey.generate().public.hex())
    engine = sa.create_engine(engine_url(database))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE relay_schema (version INTEGER NOT NULL)"))
            conn.execute(sa.text("INSERT INTO relay_schema VALUES (:v)"), {"v": SCHEMA_VERSION + 1})
    finally:
        engine.dispose()
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for db, message in [
        (database, f"the relay database has schema version {SCHEMA_VERSION + 1}, newer than"
                   f" this relay knows ({SCHEMA_VERSION})"),
        (f"postgresql://postgres:secret-pw@127.0.0.1:{closed}/test",
         f"cannot reach the relay database postgresql+psycopg://postgres:***@127.0.0.1:"
         f"{closed}/test"),
        ("mysql://relay@127.0.0.1/relay", "db must be a postgresql:// URL"),
    ]:
        result = sealgate("relay", "serve", "--home", tmp_path / "relay", "--listen",
                          "127.0.0.1:0", "--trust-root", root_file, "--db", db, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"sealgate: error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1 and "secret-pw" not in result.stderr


def test_a_lost_database_connection_is_503_and_the_relay_recovers(
    tmp_path: Path, database: str
) -> None:
    name = f"sg_cut_{os.urandom(4).hex()}"
    root = RootKey.generate()
    named = f"{database}&application_name={name}"  # so that the test can find its connections
    bubble = Bubble(root, GatewayCredential.issue(root), AccountKeys.generate(),
                    AccountKeys.generate(), Backend("postgresql", tmp_path, named))
    admin = sa.create_engine(engine_url(database))

    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            await client.deposit(make_envelope(bubble.alice), bubble.gateway)
            with admin.connect() as conn:  # the server side ends the relay's connections
                cut = conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"), {"name": name}).scalar()
            assert cut
            answer = await raw_deposit(server, bubble.gateway, make_envelope(bubble.alice))
            assert (answer.status, answer.error()) == (503, "relay storage is unavailable")
            await client.deposit(make_envelope(bubble.alice), bubble.gateway)  # reconnected
            assert len(await client.list(bubble.alice.mailbox)) == 2

    try:
        run(scenario())
    finally:
        admin.dispose()
