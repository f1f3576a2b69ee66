"""The relay's versioned schema on both backends: a new database, an upgrade of the
layout today's relays write, a refusal of a newer one, and relays starting at once."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.directory import DirectoryRecord
from bridge.envelope import OuterHeader
from bridge.relay.storage import (
    EnvelopeStatus,
    StatusAnswer,
    StorageSchemaError,
    StoredEnvelope,
    depositor_tag,
)
from bridge.relay.storage.postgres import engine_url
from bridge.relay.storage.schema import (
    SCHEMA_VERSION,
    directory_table,
    envelopes_table,
    gateway_revocations_table,
    metadata,
    schema_version,
    tombstones_table,
)
from bridge.revocation import GatewayRevocation
from tests.relay_backends import Backend

DATA = Path(__file__).parent.parent / "data"
HOUR_START = 1_700_000_000 - 1_700_000_000 % 3600
GATEWAY = b"\x42" * 32
MAILBOX = b"\x5a" * 32
RECORD = DirectoryRecord(b"\x01" * 32, 7, b"sealed entry", b"\x02" * 64)
REVOCATION = GatewayRevocation(b"\x03" * 32, b"\x04" * 64)
GONE = b"\x06" * 16  # acknowledged before the upgrade: only its tombstone is left


def engine(backend: Backend) -> sa.Engine:
    if backend.db is None:
        return sa.create_engine(sa.URL.create("sqlite", database=str(backend.home / "relay.db")))
    return sa.create_engine(engine_url(backend.db))


def version(backend: Backend) -> int:
    db = engine(backend)
    try:
        with db.connect() as conn:
            return schema_version(conn)
    finally:
        db.dispose()


def write_layout_2(backend: Backend) -> None:
    """The tables a relay wrote before versioned schemas, with a record, a revocation
    and a tombstone (on SQLite also a stored envelope and its file)."""
    if backend.db is None:
        backend.home.mkdir(exist_ok=True)
        with sqlite3.connect(backend.home / "relay.db") as db:
            db.executescript((DATA / "relay_schema_v2.sqlite.sql").read_text())
        db.close()
    db = engine(backend)
    try:
        with db.begin() as conn:
            if backend.db is not None:  # the same tables, as SQLAlchemy makes them there
                metadata.create_all(conn, tables=[envelopes_table, tombstones_table,
                                                  directory_table, gateway_revocations_table])
            conn.execute(directory_table.insert().values(
                lookup_id=RECORD.lookup_id, version=RECORD.version, sealed=RECORD.sealed,
                signature=RECORD.signature,
            ))
            conn.execute(gateway_revocations_table.insert().values(
                gateway_key=REVOCATION.gateway_key, signature=REVOCATION.signature,
            ))
            conn.execute(tombstones_table.insert().values(
                envelope_id=GONE, depositor=depositor_tag(GATEWAY, GONE), reason="delivered",
                hour=HOUR_START,
            ))
    finally:
        db.dispose()


def test_a_new_database_gets_the_current_version(relay_backend: Backend) -> None:
    assert version(relay_backend) == 0
    relay_backend.open().close()
    assert version(relay_backend) == SCHEMA_VERSION
    relay_backend.open().close()  # opening again changes nothing
    assert version(relay_backend) == SCHEMA_VERSION


def test_the_layout_of_todays_relays_is_upgraded_and_keeps_its_rows(
    relay_backend: Backend,
) -> None:
    write_layout_2(relay_backend)
    envelope_id = b"\x05" * 16
    blob = OuterHeader(envelope_id, MAILBOX, 100).pack() + os.urandom(100)
    if relay_backend.db is None:  # SQLite: an envelope stored by today's relay, file and row
        shard = relay_backend.home / "envelopes" / MAILBOX[:1].hex()
        shard.mkdir(parents=True)
        (shard / envelope_id.hex()).write_bytes(blob)
        with sqlite3.connect(relay_backend.home / "relay.db") as db:
            db.execute(
                "INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (envelope_id, MAILBOX, len(blob), b"\0" * 32, HOUR_START, 12345,
                 depositor_tag(GATEWAY, envelope_id)),
            )
        db.close()
    assert version(relay_backend) == 2

    store = relay_backend.open()
    try:
        assert version(relay_backend) == SCHEMA_VERSION
        assert store.get_directory(RECORD.lookup_id) == RECORD
        assert store.gateway_revocations() == [REVOCATION]
        assert store.status(GONE, GATEWAY) == StatusAnswer(EnvelopeStatus.DELIVERED, HOUR_START)
        if relay_backend.db is None:
            assert store.list(MAILBOX, 10) == [StoredEnvelope(envelope_id, len(blob), HOUR_START)]
            assert store.get(MAILBOX, envelope_id) == blob
            assert store.status(envelope_id, GATEWAY) == StatusAnswer(EnvelopeStatus.PENDING)
        assert store.usage().stored_bytes == (len(blob) if relay_backend.db is None else 0)
        # And it works as a relay of today: a deposit, an acknowledgement.
        new_id = b"\x07" * 16
        new = OuterHeader(new_id, MAILBOX, 50).pack() + os.urandom(50)
        store.put(MAILBOX, new_id, new, HOUR_START, GATEWAY)
        assert store.get(MAILBOX, new_id) == new
        assert store.delete(MAILBOX, new_id)
    finally:
        store.close()


def test_a_postgresql_layout_2_holding_envelopes_is_refused(postgres_backend: Backend) -> None:
    # (SQLite of layout 2 keeps its envelopes in files: the test above upgrades one.)
    relay_backend = postgres_backend
    write_layout_2(relay_backend)
    db = engine(relay_backend)
    try:
        with db.begin() as conn:
            conn.execute(envelopes_table.insert().values(
                envelope_id=b"\x05" * 16, mailbox_id=MAILBOX, size=1, sha256=b"\0" * 32,
                received=HOUR_START, tiebreak=1, depositor=b"\0" * 16,
            ))
    finally:
        db.dispose()
    with pytest.raises(StorageSchemaError, match="envelopes without their bytes"):
        relay_backend.open()
    assert version(relay_backend) == 2  # refused whole: nothing was changed


def test_a_newer_schema_is_refused_in_one_line(relay_backend: Backend) -> None:
    relay_backend.open().close()
    db = engine(relay_backend)
    try:
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE relay_schema SET version = :v"),
                         {"v": SCHEMA_VERSION + 1})
    finally:
        db.dispose()
    with pytest.raises(StorageSchemaError) as refused:
        relay_backend.open()
    message = str(refused.value)
    assert message == (
        f"the relay database has schema version {SCHEMA_VERSION + 1}, newer than this relay"
        f" knows ({SCHEMA_VERSION}): run the sealgate release that wrote it, or a later one"
    )
    assert version(relay_backend) == SCHEMA_VERSION + 1


def test_relays_starting_at_once_on_an_empty_database_create_it_once(
    postgres_backend: Backend,
) -> None:
    relay_backend = postgres_backend  # (one process owns a SQLite home)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: relay_backend.open(), range(4)))
    for store in stores:
        store.close()
    db = engine(relay_backend)
    try:
        with db.connect() as conn:
            assert conn.execute(sa.text("SELECT version FROM relay_schema")).all() == [
                (SCHEMA_VERSION,)
            ]
            assert conn.execute(sa.text("SELECT count(*) FROM relay_usage")).scalar() == 16
    finally:
        db.dispose()
