"""Relay storage under a quota and a retention period, on both backends: purges,
tombstones, status, concurrent deposits; what SqliteFileStorage's files and rows say
about time and order, and a disk that fills first."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from bridge.envelope import OUTER_HEADER_LEN, OuterHeader
from bridge.relay.config import RelayConfig
from bridge.relay.storage import (
    HOUR,
    EnvelopeStatus,
    NewEnvelope,
    PutOutcome,
    SqliteFileStorage,
    StatusAnswer,
    StorageFull,
)
from bridge.relay.storage.postgres import PostgresStorage
from bridge.settings import (
    BYTE_UNITS,
    SECOND_UNITS,
    SettingsError,
    load_settings,
    parse_quantity,
)
from tests.postgres import small_tablespace
from tests.relay_backends import Backend
from tests.tmpfs import small_tmpfs

HOUR_START = 1_700_000_000 - 1_700_000_000 % HOUR
GATEWAY = b"\x42" * 32
OTHER_GATEWAY = b"\x43" * 32
MAILBOX = b"\x11" * 32
SIZE = 1000  # ciphertext bytes of each test envelope
ENVELOPE_BYTES = OUTER_HEADER_LEN + SIZE


def envelope(envelope_id: bytes, mailbox_id: bytes = MAILBOX, size: int = SIZE) -> bytes:
    return OuterHeader(envelope_id, mailbox_id, size).pack() + os.urandom(size)


def eid(n: int) -> bytes:
    return n.to_bytes(16, "big")


Storage = SqliteFileStorage | PostgresStorage


@pytest.fixture
def three(relay_backend: Backend) -> Iterator[Storage]:
    """A storage whose quota holds three test envelopes."""
    store = relay_backend.open(quota=3 * ENVELOPE_BYTES, retention=24 * HOUR)
    yield store
    store.close()


@pytest.fixture
def sqlite_three(tmp_path: Path) -> Iterator[SqliteFileStorage]:
    store = SqliteFileStorage(tmp_path, quota=3 * ENVELOPE_BYTES, retention=24 * HOUR)
    yield store
    store.close()


def stored_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "envelopes").rglob("*") if p.is_file())


def test_a_deposit_over_the_quota_purges_the_oldest_first(
    relay_backend: Backend, three: Storage
) -> None:
    # Deposit order differs from id order, so the purge cannot be following ids.
    ids = [eid(n) for n in (9, 3, 7, 1, 5)]
    for envelope_id in ids:
        assert three.put(MAILBOX, envelope_id, envelope(envelope_id), HOUR_START, GATEWAY) is (
            PutOutcome.CREATED
        )
        assert three.stored_bytes <= 3 * ENVELOPE_BYTES
    assert [item.envelope_id for item in three.list(MAILBOX, 10)] == ids[2:]
    assert relay_backend.stored_total() == 3 * ENVELOPE_BYTES
    for envelope_id in ids[:2]:
        answer = three.status(envelope_id, GATEWAY)
        assert answer.status is EnvelopeStatus.PURGED and answer.hour is not None
        assert answer.hour % HOUR == 0
        assert three.get(MAILBOX, envelope_id) is None
    assert three.status(ids[2], GATEWAY) == StatusAnswer(EnvelopeStatus.PENDING)


def test_an_older_hour_goes_first_whatever_the_deposit_order(three: Storage) -> None:
    three.put(MAILBOX, eid(1), envelope(eid(1)), HOUR_START, GATEWAY)
    three.put(MAILBOX, eid(2), envelope(eid(2)), HOUR_START - HOUR, GATEWAY)
    three.put(MAILBOX, eid(3), envelope(eid(3)), HOUR_START, GATEWAY)
    three.put(MAILBOX, eid(4), envelope(eid(4)), HOUR_START, GATEWAY)
    assert three.status(eid(2), GATEWAY).status is EnvelopeStatus.PURGED
    assert [item.envelope_id for item in three.list(MAILBOX, 10)] == [eid(1), eid(3), eid(4)]


def test_an_envelope_larger_than_the_quota_is_refused_and_nothing_purged(
    three: Storage,
) -> None:
    three.put(MAILBOX, eid(1), envelope(eid(1)), HOUR_START, GATEWAY)
    with pytest.raises(StorageFull) as refused:
        three.put(MAILBOX, eid(2), envelope(eid(2), size=3 * ENVELOPE_BYTES), HOUR_START, GATEWAY)
    assert (refused.value.status, refused.value.reason) == (
        507, "envelope is larger than the relay's whole quota"
    )
    assert three.status(eid(1), GATEWAY).status is EnvelopeStatus.PENDING
    assert three.status(eid(2), GATEWAY).status is EnvelopeStatus.UNKNOWN


def test_status_answers_only_the_depositing_gateway(three: Storage) -> None:
    three.put(MAILBOX, eid(1), envelope(eid(1)), HOUR_START, GATEWAY)
    three.put(MAILBOX, eid(2), envelope(eid(2)), HOUR_START, GATEWAY)
    assert three.delete(MAILBOX, eid(2))
    assert three.status(eid(1), OTHER_GATEWAY) == StatusAnswer(EnvelopeStatus.UNKNOWN)
    assert three.status(eid(2), OTHER_GATEWAY) == StatusAnswer(EnvelopeStatus.UNKNOWN)
    delivered = three.status(eid(2), GATEWAY)
    assert delivered.status is EnvelopeStatus.DELIVERED
    assert three.status(eid(99), GATEWAY) == StatusAnswer(EnvelopeStatus.UNKNOWN)
    assert three.stored_bytes == ENVELOPE_BYTES


def test_the_sweep_expires_old_envelopes_and_forgets_old_tombstones(
    three: Storage,
) -> None:
    three.put(MAILBOX, eid(1), envelope(eid(1)), HOUR_START, GATEWAY)
    three.put(MAILBOX, eid(2), envelope(eid(2)), HOUR_START + 2 * HOUR, GATEWAY)
    # Received in the hour starting HOUR_START: not yet a whole day old one hour later.
    day = 24 * HOUR
    assert three.sweep(HOUR_START + day + HOUR - 1).expired == 0
    swept = three.sweep(HOUR_START + day + HOUR)
    assert (swept.expired, swept.forgotten) == (1, 0)
    expired = three.status(eid(1), GATEWAY)
    assert expired == StatusAnswer(EnvelopeStatus.EXPIRED, HOUR_START + day + HOUR)
    assert three.get(MAILBOX, eid(1)) is None
    assert three.status(eid(2), GATEWAY).status is EnvelopeStatus.PENDING
    assert three.stored_bytes == ENVELOPE_BYTES
    # The tombstone is kept for the retention period too, then forgotten.
    later = three.sweep(HOUR_START + 3 * day + 3 * HOUR)
    assert (later.expired, later.forgotten) == (1, 1)
    assert three.status(eid(1), GATEWAY) == StatusAnswer(EnvelopeStatus.UNKNOWN)


def test_concurrent_deposits_never_exceed_the_quota(relay_backend: Backend) -> None:
    quota = 10 * ENVELOPE_BYTES
    store = relay_backend.open(quota=quota)
    try:
        blobs = {eid(n): envelope(eid(n), MAILBOX if n % 2 else b"\x22" * 32) for n in range(200)}
        peak = 0

        def deposit(item: tuple[bytes, bytes]) -> PutOutcome:
            nonlocal peak
            outcome = store.put(item[1][20:52], item[0], item[1], HOUR_START, GATEWAY)
            peak = max(peak, store.stored_bytes)
            return outcome

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(deposit, blobs.items()))
        assert outcomes == [PutOutcome.CREATED] * 200
        assert peak <= quota
        assert relay_backend.stored_total() == quota == store.stored_bytes
        statuses = {envelope_id: store.status(envelope_id, GATEWAY).status
                    for envelope_id in blobs}
        assert list(statuses.values()).count(EnvelopeStatus.PURGED) == 190
        pending = [i for i, status in statuses.items() if status is EnvelopeStatus.PENDING]
        assert len(pending) == 10
        for envelope_id in pending:  # whole, and the bytes deposited under that id
            assert relay_backend.at_rest(blobs[envelope_id][20:52], envelope_id) == (
                blobs[envelope_id]
            )
    finally:
        store.close()


def test_files_and_rows_keep_hours_and_no_deposit_order(
    tmp_path: Path, sqlite_three: SqliteFileStorage
) -> None:
    three = sqlite_three
    for n in range(3):
        three.put(MAILBOX, eid(n), envelope(eid(n)), HOUR_START, GATEWAY)
    three.delete(MAILBOX, eid(0))
    files = stored_files(tmp_path)
    for path in [*files, tmp_path / "envelopes", tmp_path / "envelopes" / MAILBOX[:1].hex()]:
        assert path.stat().st_mtime_ns % (HOUR * 10**9) == 0, path
    for path in files:
        assert path.stat().st_atime_ns % (HOUR * 10**9) == 0, path
    three.get(MAILBOX, eid(1))  # a fetch leaves the access time alone
    path = stored_files(tmp_path)[0]
    assert path.stat().st_atime_ns % (HOUR * 10**9) == 0
    with sqlite3.connect(tmp_path / "relay.db") as db:
        for table in ("envelopes", "tombstones"):
            with pytest.raises(sqlite3.OperationalError, match="rowid"):
                db.execute(f"SELECT rowid FROM {table}")  # noqa: S608 - fixed names
        columns = {row[1] for row in db.execute("PRAGMA table_info(envelopes)")}
    assert columns == {
        "envelope_id", "mailbox_id", "size", "sha256", "received", "tiebreak", "depositor"
    }
    assert GATEWAY not in (tmp_path / "relay.db").read_bytes()


def test_a_home_of_the_seq_layout_is_upgraded(tmp_path: Path) -> None:
    blob = envelope(eid(5))
    shard = tmp_path / "envelopes" / MAILBOX[:1].hex()
    shard.mkdir(parents=True)
    (shard / eid(5).hex()).write_bytes(blob)
    with sqlite3.connect(tmp_path / "relay.db") as db:
        db.execute(
            "CREATE TABLE envelopes (seq INTEGER PRIMARY KEY, envelope_id BLOB UNIQUE NOT NULL,"
            " mailbox_id BLOB NOT NULL, size BIGINT NOT NULL, sha256 BLOB NOT NULL,"
            " received BIGINT NOT NULL)"
        )
        db.execute("CREATE INDEX envelopes_by_mailbox ON envelopes (mailbox_id, seq)")
        db.execute(
            "INSERT INTO envelopes (envelope_id, mailbox_id, size, sha256, received)"
            " VALUES (?, ?, ?, ?, ?)", (eid(5), MAILBOX, len(blob), b"\0" * 32, HOUR_START),
        )
    db.close()
    store = SqliteFileStorage(tmp_path)
    try:
        assert [item.envelope_id for item in store.list(MAILBOX, 10)] == [eid(5)]
        assert store.get(MAILBOX, eid(5)) == blob
        assert store.stored_bytes == len(blob)
        assert store.status(eid(5), GATEWAY).status is EnvelopeStatus.UNKNOWN
    finally:
        store.close()


def fill_until_full(store: Storage) -> dict[bytes, bytes]:
    """Deposit 64 KiB envelopes until one is refused as storage full; what was stored."""
    stored: dict[bytes, bytes] = {}
    for n in range(1000):
        blob = envelope(eid(n), size=64 * 1024)
        try:
            store.put(MAILBOX, eid(n), blob, HOUR_START, GATEWAY)
        except StorageFull as refused:
            assert (refused.status, refused.reason) == (507, "relay storage is full")
            assert stored, "the disk took nothing at all"
            assert store.status(eid(n), GATEWAY).status is EnvelopeStatus.UNKNOWN
            return stored
        stored[eid(n)] = blob
    raise AssertionError("the disk never filled")


def assert_intact(store: Storage, stored: dict[bytes, bytes]) -> None:
    assert {item.envelope_id for item in store.list(MAILBOX, 1000)} == set(stored)
    for envelope_id, blob in stored.items():
        assert store.get(MAILBOX, envelope_id) == blob
    assert store.usage().stored_bytes == sum(map(len, stored.values()))


def test_a_full_disk_refuses_deposits_with_507_and_keeps_what_is_stored(tmp_path: Path) -> None:
    # A real full file system: a 2 MiB tmpfs, no quota, so the disk fills first.
    with small_tmpfs(tmp_path / "small", "2m") as home:
        with closing(SqliteFileStorage(home)) as store:
            stored = fill_until_full(store)
            assert list((home / "envelopes").rglob("*.tmp")) == []
        with closing(SqliteFileStorage(home)) as store:  # opens again; all acknowledged intact
            assert_intact(store, stored)
            assert store.delete(MAILBOX, next(iter(stored)))  # and an ack frees room


def test_a_full_postgresql_disk_refuses_deposits_with_507_and_keeps_what_is_stored() -> None:
    # The database's tables on a 4 MiB tmpfs tablespace, no quota: that disk fills first.
    with small_tablespace("sg_relay_full", "4m") as url:
        with closing(PostgresStorage(url)) as store:
            stored = fill_until_full(store)
        with closing(PostgresStorage(url)) as store:  # opens again; all acknowledged intact
            assert_intact(store, stored)
            # An acknowledgement needs room for its tombstone (a deleted row frees none
            # until VACUUM): it is refused whole, and the gateway acknowledges again later.
            first = next(iter(stored))
            with pytest.raises(StorageFull):
                store.delete(MAILBOX, first)
            assert store.status(first, GATEWAY).status is EnvelopeStatus.PENDING
            assert_intact(store, stored)


@pytest.mark.parametrize(
    ("text", "units", "value"),
    [
        ("20GiB", BYTE_UNITS, 20 * 1024**3),
        ("1.5 KiB", BYTE_UNITS, 1536),
        ("2MB", BYTE_UNITS, 2_000_000),
        ("4096", BYTE_UNITS, 4096),
        ("30d", SECOND_UNITS, 30 * 86400),
        ("90m", SECOND_UNITS, 5400),
        ("2w", SECOND_UNITS, 14 * 86400),
    ],
)
def test_human_units(text: str, units: object, value: int) -> None:
    assert parse_quantity(text, units, "quota") == value  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "20 GiBs", "1.5B", "ten", "1e9"])
def test_nonsense_is_one_line_naming_the_setting(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_quantity(text, BYTE_UNITS, "quota")
    message = str(caught.value)
    assert message.startswith("setting 'quota': ") and "\n" not in message


def test_quota_and_retention_from_toml_and_flags(tmp_path: Path) -> None:
    config = load_settings(
        RelayConfig, {"quota": "20GiB", "retention": "2w", "sweep_interval": 300},
        {"home": tmp_path, "retention": "30d"},
    )
    assert (config.quota, config.retention, config.sweep_interval) == (
        20 * 1024**3, 30 * 86400, 300
    )
    assert RelayConfig(home=tmp_path).quota is None  # no quota unless one is set
    for values, message in [
        ({"quota": "lots"}, "setting 'quota': expected a size like 20GiB, got 'lots'"),
        ({"quota": "10B"}, "quota must be an integer from"),
        ({"retention": "30 minutes"}, "setting 'retention': expected a duration like 30d"),
        ({"retention": "30m"}, "retention must be an integer from 3600"),
        ({"sweep_interval": "0s"}, "sweep_interval must be an integer from 1"),
    ]:
        with pytest.raises(SettingsError, match=message):
            load_settings(RelayConfig, values, {"home": tmp_path})



def fill_by_batches_until_full(store: Storage) -> dict[bytes, bytes]:
    """Deposit batches of eight 64 KiB envelopes until one is answered storage full;
    what was stored. Each refused envelope is unknown to the storage."""
    stored: dict[bytes, bytes] = {}
    for first in range(0, 1000, 8):
        blobs = {eid(n): envelope(eid(n), size=64 * 1024) for n in range(first, first + 8)}
        results = store.put_many(
            [NewEnvelope(MAILBOX, i, blob) for i, blob in blobs.items()], HOUR_START, GATEWAY
        )
        for (envelope_id, blob), result in zip(blobs.items(), results, strict=True):
            if result is PutOutcome.CREATED:
                stored[envelope_id] = blob
            else:
                assert isinstance(result, StorageFull), result
                assert (result.status, result.reason) == (507, "relay storage is full")
                assert store.status(envelope_id, GATEWAY).status is EnvelopeStatus.UNKNOWN
        if len(stored) < first + 8:
            assert stored, "the disk took nothing at all"
            return stored
    raise AssertionError("the disk never filled")


def test_a_full_disk_refuses_the_batch_envelopes_that_do_not_fit(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "2m") as home:
        with closing(SqliteFileStorage(home)) as store:
            stored = fill_by_batches_until_full(store)
            assert list((home / "envelopes").rglob("*.tmp")) == []
            assert_intact(store, stored)
        with closing(SqliteFileStorage(home)) as store:  # opens again; all acknowledged intact
            assert_intact(store, stored)
            files = [p for p in (home / "envelopes").rglob("*") if p.is_file()]
            assert len(files) == len(stored)  # nothing of a refused one left behind


def test_a_full_postgresql_disk_refuses_the_batch_envelopes_that_do_not_fit() -> None:
    with small_tablespace("sg_relay_full", "4m") as url:
        with closing(PostgresStorage(url)) as store:
            stored = fill_by_batches_until_full(store)
            assert_intact(store, stored)
        with closing(PostgresStorage(url)) as store:
            assert_intact(store, stored)
