"""Relay storage on both backends (SQLite + files, PostgreSQL): rows, bytes, races; and
SqliteFileStorage on a real temporary directory: file modes, durability, crash debris."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections import namedtuple
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.directory import DirectoryRecord
from bridge.envelope import OuterHeader
from bridge.relay.storage import (
    EnvelopeStatus,
    EnvelopeStorage,
    NewEnvelope,
    PutOutcome,
    SqliteFileStorage,
    StorageFull,
    StorageUsage,
    StoredEnvelope,
    coarse_hour,
)
from bridge.relay.storage.postgres import PostgresStorage
from bridge.relay.storage.rows import ArrivalOrder
from bridge.revocation import GatewayRevocation
from tests.relay_backends import Backend

HOUR_START = 1_700_000_000 - 1_700_000_000 % 3600
GATEWAY = b"\x42" * 32  # the depositing gateway key
Row = namedtuple("Row", "envelope_id received tiebreak")


def envelope(mailbox_id: bytes, envelope_id: bytes, size: int = 100) -> bytes:
    ciphertext = os.urandom(size)
    return OuterHeader(envelope_id, mailbox_id, len(ciphertext)).pack() + ciphertext


def envelope_file(home: Path, mailbox_id: bytes, envelope_id: bytes) -> Path:
    return home / "envelopes" / mailbox_id[:1].hex() / envelope_id.hex()


@pytest.fixture
def storage(relay_backend: Backend) -> Iterator[SqliteFileStorage | PostgresStorage]:
    store = relay_backend.open()
    yield store
    store.close()


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[SqliteFileStorage]:
    store = SqliteFileStorage(tmp_path)
    yield store
    store.close()


def test_is_an_envelope_storage(storage: SqliteFileStorage | PostgresStorage) -> None:
    backend: EnvelopeStorage = storage
    assert backend.list(b"\0" * 32, 10) == []


def test_coarse_hour() -> None:
    assert coarse_hour(HOUR_START + 3599.9) == HOUR_START
    assert coarse_hour(HOUR_START) == HOUR_START


def test_put_list_get_delete(
    relay_backend: Backend, storage: SqliteFileStorage | PostgresStorage
) -> None:
    mailbox = b"\x7f" * 32
    # Deposit order differs from id order: listing must follow deposit order.
    ids = [bytes([255 - n]) * 16 for n in range(4)]
    data = [envelope(mailbox, envelope_id, 10 * n) for n, envelope_id in enumerate(ids)]
    for envelope_id, blob in zip(ids, data, strict=True):
        assert storage.put(mailbox, envelope_id, blob, HOUR_START, GATEWAY) is PutOutcome.CREATED
    assert storage.list(mailbox, 10) == [
        StoredEnvelope(envelope_id, len(blob), HOUR_START)
        for envelope_id, blob in zip(ids, data, strict=True)
    ]
    assert [item.envelope_id for item in storage.list(mailbox, 2)] == ids[:2]
    assert storage.get(mailbox, ids[1]) == data[1]
    assert relay_backend.at_rest(mailbox, ids[1]) == data[1]
    assert storage.delete(mailbox, ids[1]) is True
    assert storage.delete(mailbox, ids[1]) is False
    assert storage.get(mailbox, ids[1]) is None
    assert relay_backend.at_rest(mailbox, ids[1]) is None
    assert [item.envelope_id for item in storage.list(mailbox, 10)] == [ids[0], ids[2], ids[3]]


def test_files_are_private(tmp_path: Path, sqlite_storage: SqliteFileStorage) -> None:
    mailbox, envelope_id = b"\x01" * 32, b"\x02" * 16
    sqlite_storage.put(mailbox, envelope_id, envelope(mailbox, envelope_id), HOUR_START, GATEWAY)
    mode = envelope_file(tmp_path, mailbox, envelope_id).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE((tmp_path / "envelopes").stat().st_mode) == 0o700


def test_other_mailbox_cannot_reach_an_envelope(
    storage: SqliteFileStorage | PostgresStorage,
) -> None:
    # Same first byte: both mailboxes share a shard directory, so only the row can tell.
    alice, bob, envelope_id = b"\xaa" * 32, b"\xaa" + b"\xbb" * 31, b"\x05" * 16
    blob = envelope(alice, envelope_id)
    storage.put(alice, envelope_id, blob, HOUR_START, GATEWAY)
    assert storage.get(bob, envelope_id) is None
    assert storage.delete(bob, envelope_id) is False
    assert storage.get(alice, envelope_id) == blob


def test_duplicate_and_conflict(storage: SqliteFileStorage | PostgresStorage) -> None:
    mailbox, other, envelope_id = b"\x10" * 32, b"\x20" * 32, b"\x03" * 16
    blob = envelope(mailbox, envelope_id)
    assert storage.put(mailbox, envelope_id, blob, HOUR_START, GATEWAY) is PutOutcome.CREATED
    again = storage.put(mailbox, envelope_id, blob, HOUR_START + 3600, GATEWAY)
    assert again is PutOutcome.DUPLICATE
    changed = envelope(mailbox, envelope_id)
    assert storage.put(mailbox, envelope_id, changed, HOUR_START, GATEWAY) is PutOutcome.CONFLICT
    elsewhere = envelope(other, envelope_id)
    assert storage.put(other, envelope_id, elsewhere, HOUR_START, GATEWAY) is PutOutcome.CONFLICT
    assert storage.get(mailbox, envelope_id) == blob
    assert storage.list(other, 10) == []
    assert storage.list(mailbox, 10) == [StoredEnvelope(envelope_id, len(blob), HOUR_START)]


def test_concurrent_puts_of_one_id_store_one_envelope(
    relay_backend: Backend, storage: SqliteFileStorage | PostgresStorage
) -> None:
    mailbox, envelope_id = b"\x33" * 32, b"\x44" * 16
    candidates = [envelope(mailbox, envelope_id, 5000) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(
            pool.map(
                lambda b: storage.put(mailbox, envelope_id, b, HOUR_START, GATEWAY), candidates
            )
        )
    assert sorted(o.value for o in outcomes) == ["conflict"] * 7 + ["created"]
    winner = candidates[outcomes.index(PutOutcome.CREATED)]
    assert storage.get(mailbox, envelope_id) == winner
    assert relay_backend.at_rest(mailbox, envelope_id) == winner

    same_id = b"\x45" * 16
    same = envelope(mailbox, same_id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(
            pool.map(lambda _: storage.put(mailbox, same_id, same, HOUR_START, GATEWAY), range(8))
        )
    assert sorted(o.value for o in outcomes) == ["created"] + ["duplicate"] * 7


def test_reopening_removes_crash_debris_and_keeps_envelopes(tmp_path: Path) -> None:
    store = SqliteFileStorage(tmp_path)
    kept_mailbox, kept_id = b"\xff" * 32, b"\x06" * 16
    kept = envelope(kept_mailbox, kept_id)
    store.put(kept_mailbox, kept_id, kept, HOUR_START, GATEWAY)
    store.close()
    shard = tmp_path / "envelopes" / "ff"
    orphan = shard / ("07" * 16)  # written, then the process died before the row
    temporary = shard / f".{'08' * 16}.0123456789abcdef.tmp"  # died before the rename
    unrelated = shard / "README"
    for path in (orphan, temporary, unrelated):
        path.write_bytes(b"debris")

    store = SqliteFileStorage(tmp_path)
    try:
        assert not orphan.exists() and not temporary.exists()
        assert unrelated.exists()
        assert store.get(kept_mailbox, kept_id) == kept
        assert envelope_file(tmp_path, kept_mailbox, kept_id).read_bytes() == kept
    finally:
        store.close()


def test_debris_under_a_new_id_is_replaced(
    tmp_path: Path, sqlite_storage: SqliteFileStorage
) -> None:
    storage = sqlite_storage
    mailbox, envelope_id = b"\x09" * 32, b"\x0a" * 16
    path = envelope_file(tmp_path, mailbox, envelope_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left over from a deposit never acknowledged")
    blob = envelope(mailbox, envelope_id)
    assert storage.put(mailbox, envelope_id, blob, HOUR_START, GATEWAY) is PutOutcome.CREATED
    assert storage.get(mailbox, envelope_id) == blob
    assert path.read_bytes() == blob


def test_sqlite_runs_in_wal_with_full_sync(
    tmp_path: Path, sqlite_storage: SqliteFileStorage
) -> None:
    storage = sqlite_storage
    storage.put_directory(DirectoryRecord(b"\x01" * 32, 1, b"sealed", b"\x02" * 64))
    with sqlite3.connect(tmp_path / "relay.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with storage._engine.connect() as conn:  # synchronous is a per-connection setting
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_directory_records(storage: SqliteFileStorage | PostgresStorage) -> None:
    first = DirectoryRecord(b"\x02" * 32, 1, b"sealed one", b"\x03" * 64)
    second = DirectoryRecord(b"\x01" * 32, 5, b"sealed two", b"\x04" * 64)
    assert storage.get_directory(first.lookup_id) is None
    assert storage.put_directory(first) and storage.put_directory(second)
    assert storage.get_directory(first.lookup_id) == first
    assert storage.all_directory() == [second, first]
    replaced = DirectoryRecord(first.lookup_id, 2, b"sealed again", b"\x05" * 64)
    assert storage.put_directory(replaced)
    assert storage.get_directory(first.lookup_id) == replaced
    assert storage.all_directory() == [second, replaced]


def test_directory_keeps_the_highest_version(
    storage: SqliteFileStorage | PostgresStorage,
) -> None:
    newest = DirectoryRecord(b"\x01" * 32, 3, b"version three", b"\x03" * 64)
    assert storage.put_directory(newest)
    for version in (1, 2, 3):  # older, and equal with other bytes: refused, nothing changes
        stale = DirectoryRecord(newest.lookup_id, version, b"replayed", b"\x04" * 64)
        assert not storage.put_directory(stale)
    assert storage.get_directory(newest.lookup_id) == newest


def test_racing_publications_leave_the_highest_version(
    storage: SqliteFileStorage | PostgresStorage,
) -> None:
    records = [DirectoryRecord(b"\x07" * 32, v, b"v%d" % v, b"\x01" * 64) for v in range(1, 41)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(storage.put_directory, reversed(records)))
    assert storage.get_directory(b"\x07" * 32) == records[-1]


def test_gateway_revocations_are_kept_once(
    relay_backend: Backend, storage: SqliteFileStorage | PostgresStorage
) -> None:
    one = GatewayRevocation(b"\x02" * 32, b"\x03" * 64)
    two = GatewayRevocation(b"\x01" * 32, b"\x04" * 64)
    storage.put_gateway_revocation(one)
    storage.put_gateway_revocation(two)
    storage.put_gateway_revocation(one)
    assert storage.gateway_revocations() == [two, one]
    storage.close()
    again = relay_backend.open()
    try:
        assert again.gateway_revocations() == [two, one]
    finally:
        again.close()


def test_arrival_order_forgets_the_earliest_beyond_its_limit() -> None:
    # Another relay process may acknowledge what this one deposited: the memory of
    # deposit order must stay bounded all the same.
    order = ArrivalOrder(limit=3)
    rows = [Row(bytes([n]) * 16, HOUR_START, 100 - n) for n in range(5)]
    for row in rows:
        order.add(row.envelope_id)
    assert sorted(rows[2:], key=order.key) == rows[2:]  # remembered: deposit order
    assert sorted(rows[:2], key=order.key) == [rows[1], rows[0]]  # forgotten: tiebreak


def test_concurrent_deposits_are_all_stored_durably(tmp_path: Path) -> None:
    store = SqliteFileStorage(tmp_path)
    mailboxes = [os.urandom(32) for _ in range(4)]
    items = [(mailboxes[n % 4], os.urandom(16)) for n in range(40)]
    data = {envelope_id: envelope(mailbox_id, envelope_id) for mailbox_id, envelope_id in items}
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(
                lambda item: store.put(item[0], item[1], data[item[1]], HOUR_START, GATEWAY),
                items,
            ))
    finally:
        store.close()
    assert outcomes == [PutOutcome.CREATED] * len(items)
    reopened = SqliteFileStorage(tmp_path)  # keeps what it holds (no debris removed)
    try:
        for mailbox_id, envelope_id in items:
            assert reopened.get(mailbox_id, envelope_id) == data[envelope_id]
        assert reopened.usage().envelopes == len(items)
    finally:
        reopened.close()


def test_put_many_answers_each_envelope_in_order(
    storage: SqliteFileStorage | PostgresStorage,
) -> None:
    mailbox = os.urandom(32)
    old, new, other = os.urandom(16), os.urandom(16), os.urandom(16)
    stored = envelope(mailbox, old)
    assert storage.put(mailbox, old, stored, HOUR_START, GATEWAY) is PutOutcome.CREATED
    fresh, clash, second = envelope(mailbox, new), envelope(mailbox, old), envelope(mailbox, other)
    batch = [
        NewEnvelope(mailbox, new, fresh), NewEnvelope(mailbox, old, stored),
        NewEnvelope(mailbox, old, clash), NewEnvelope(mailbox, new, fresh),
        NewEnvelope(mailbox, other, second), NewEnvelope(mailbox, other, fresh),
    ]
    assert storage.put_many(batch, HOUR_START, GATEWAY) == [
        PutOutcome.CREATED, PutOutcome.DUPLICATE, PutOutcome.CONFLICT,
        PutOutcome.DUPLICATE, PutOutcome.CREATED, PutOutcome.CONFLICT,
    ]
    assert storage.get(mailbox, new) == fresh
    assert storage.get(mailbox, old) == stored
    assert storage.get(mailbox, other) == second
    assert storage.usage() == StorageUsage(3, len(stored) + len(fresh) + len(second))
    assert storage.status(new, GATEWAY).status is EnvelopeStatus.PENDING


def test_put_many_refuses_only_what_exceeds_the_quota(relay_backend: Backend) -> None:
    store = relay_backend.open(quota=1000)
    mailbox = os.urandom(32)
    small, large = os.urandom(16), os.urandom(16)
    try:
        results = store.put_many([
            NewEnvelope(mailbox, small, envelope(mailbox, small, 100)),
            NewEnvelope(mailbox, large, envelope(mailbox, large, 2000)),
        ], HOUR_START, GATEWAY)
        assert results[0] is PutOutcome.CREATED
        assert isinstance(results[1], StorageFull)
        assert [item.envelope_id for item in store.list(mailbox, 10)] == [small]
        assert store.get(mailbox, large) is None
    finally:
        store.close()


def test_concurrent_batches_and_puts_of_the_same_ids_store_each_once(tmp_path: Path) -> None:
    """Batches and single puts race for the same ids (sharing lock stripes): each id is
    stored once, every caller hears CREATED or DUPLICATE, and a reopen finds no debris."""
    store = SqliteFileStorage(tmp_path)
    mailbox = os.urandom(32)
    ids = [os.urandom(16) for _ in range(60)]
    data = {envelope_id: envelope(mailbox, envelope_id) for envelope_id in ids}
    batches = [[NewEnvelope(mailbox, i, data[i]) for i in ids[k::3]] for k in range(3)] * 2

    def deposit(n: int) -> list[PutOutcome | StorageFull]:
        if n < len(batches):
            return store.put_many(batches[n], HOUR_START, GATEWAY)
        envelope_id = ids[n % len(ids)]
        return [store.put(mailbox, envelope_id, data[envelope_id], HOUR_START, GATEWAY)]

    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = [r for rs in pool.map(deposit, range(len(batches) + 60)) for r in rs]
    finally:
        store.close()
    assert set(answers) == {PutOutcome.CREATED, PutOutcome.DUPLICATE}
    assert answers.count(PutOutcome.CREATED) == len(ids)
    reopened = SqliteFileStorage(tmp_path)
    try:
        assert reopened.usage().envelopes == len(ids)
        assert all(reopened.get(mailbox, i) == data[i] for i in ids)
    finally:
        reopened.close()
