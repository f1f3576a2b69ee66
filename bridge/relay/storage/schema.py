"""The relay's tables, the same on SQLite and PostgreSQL, and their versioned migrations.

    envelopes            one row per stored envelope: ids, size, sha256, hour received,
                         random tiebreak, depositor tag (no row number, no exact time)
    tombstones           one per envelope acknowledged, purged or expired: id, hour,
                         reason, depositor tag
    directory_records    the highest version of each lookup id
    gateway_revocations  one per revoked gateway key
    relay_schema         one row: the layout's version (SCHEMA_VERSION)
    PostgreSQL only:
    envelope_bytes       the envelope bytes, exactly as deposited (SQLite keeps files)
    relay_usage          stored envelopes and bytes, as a few counter rows ("stripes")
                         that deposits add to and removals subtract from

Versions. 1: the first layout (envelopes ordered by a global `seq`). 2: hours plus a
random tiebreak, depositor tags, tombstones (databases of 1 and 2 carry no version
row: 1 is told from 2 by its `seq` column). 3: the `relay_schema` row; on PostgreSQL
the bytes and usage tables. `prepare` brings a database of any earlier version to
SCHEMA_VERSION (on PostgreSQL in one transaction; SQLite's driver commits each DDL
statement) and refuses, with one line, a database of a later one (a newer relay
wrote it). A version table rather than Alembic: the relay upgrades
its own database at start, with no script directory or configuration of its own to
ship, and each step is a few statements written once for both databases.

On PostgreSQL, several relay processes may start at once: `prepare` holds a
transaction-scoped advisory lock (keyed by the current schema) while it reads and
upgrades, so one does the work and the others find it done. Nothing here reads or
writes envelope contents beyond copying rows.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from bridge.relay.storage.protocol import DEPOSITOR_TAG_LEN, StorageSchemaError

SCHEMA_VERSION = 3
USAGE_STRIPES = 16  # counter rows in relay_usage: removals rarely wait for each other
MIGRATION_LOCK = 1  # second key of the advisory locks taken in this schema
QUOTA_LOCK = 2

metadata = sa.MetaData()

envelopes_table = sa.Table(
    "envelopes",
    metadata,
    sa.Column("envelope_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("mailbox_id", sa.LargeBinary(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("received", sa.BigInteger, nullable=False),  # unix hour
    sa.Column("tiebreak", sa.BigInteger, nullable=False),  # random, orders within an hour
    sa.Column("depositor", sa.LargeBinary(DEPOSITOR_TAG_LEN), nullable=False),
    sa.Index("envelopes_by_mailbox", "mailbox_id", "received", "tiebreak"),
    sa.Index("envelopes_by_age", "received", "tiebreak"),
    sqlite_with_rowid=False,
)

tombstones_table = sa.Table(
    "tombstones",
    metadata,
    sa.Column("envelope_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("depositor", sa.LargeBinary(DEPOSITOR_TAG_LEN), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # delivered | purged | expired
    sa.Column("hour", sa.BigInteger, nullable=False),
    sa.Index("tombstones_by_age", "hour"),
    sqlite_with_rowid=False,
)

directory_table = sa.Table(
    "directory_records",
    metadata,
    sa.Column("lookup_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
)

gateway_revocations_table = sa.Table(
    "gateway_revocations",
    metadata,
    sa.Column("gateway_key", sa.LargeBinary(32), primary_key=True),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
)

schema_table = sa.Table(
    "relay_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# PostgreSQL only (created by `prepare` on that dialect alone).
postgres_metadata = sa.MetaData()

envelope_bytes_table = sa.Table(
    "envelope_bytes",
    postgres_metadata,
    sa.Column("envelope_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

usage_table = sa.Table(
    "relay_usage",
    postgres_metadata,
    sa.Column("stripe", sa.SmallInteger, primary_key=True),
    sa.Column("envelopes", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)


def prepare(conn: sa.Connection) -> int:
    """Create or upgrade the relay's tables in `conn`'s transaction; the version found.

    0 means an empty database. Raises StorageSchemaError for a newer layout.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()), :k)"),
                     {"k": MIGRATION_LOCK})
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise StorageSchemaError(
            f"the relay database has schema version {found}, newer than this relay knows"
            f" ({SCHEMA_VERSION}): run the sealgate release that wrote it, or a later one"
        )
    if found == SCHEMA_VERSION:
        return found
    if found == 0:
        metadata.create_all(conn)
        if postgres:
            postgres_metadata.create_all(conn)
            _zero_usage(conn)
    else:
        for step in _STEPS[found - 1:]:
            step(conn)
    conn.execute(schema_table.delete())
    conn.execute(schema_table.insert().values(version=SCHEMA_VERSION))
    return found


def schema_version(conn: sa.Connection) -> int:
    """The layout's version as `prepare` understands it (0: no relay tables at all)."""
    inspector = sa.inspect(conn)
    if inspector.has_table("relay_schema"):
        version = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
        if version is None:
            raise StorageSchemaError("the relay database's schema table is empty")
        return int(version)
    if not inspector.has_table("envelopes"):
        return 0
    columns = {column["name"] for column in inspector.get_columns("envelopes")}
    return 1 if "seq" in columns else 2


def _from_seq_order(conn: sa.Connection) -> None:
    """1 -> 2: rewrite the envelopes table ordered by a global `seq` (SQLite only).

    Its rows keep their ids, sizes and hours and get a random tiebreak; their depositor
    is unknown (an all-zero tag, which no gateway key gives), so their status answers
    `unknown`. The tombstones table is new.
    """
    conn.exec_driver_sql("ALTER TABLE envelopes RENAME TO envelopes_seq")
    conn.exec_driver_sql("DROP INDEX IF EXISTS envelopes_by_mailbox")
    envelopes_table.create(conn)
    conn.exec_driver_sql(
        "INSERT INTO envelopes (envelope_id, mailbox_id, size, sha256, received, tiebreak,"
        " depositor) SELECT envelope_id, mailbox_id, size, sha256, received,"
        " abs(random() % 9223372036854775807), zeroblob(16) FROM envelopes_seq"
    )
    conn.exec_driver_sql("DROP TABLE envelopes_seq")
    metadata.create_all(conn, tables=[tombstones_table, directory_table,
                                      gateway_revocations_table])


def _versioned(conn: sa.Connection) -> None:
    """2 -> 3: the version row; on PostgreSQL the bytes table and the usage counters.

    A PostgreSQL database of layout 2 has nowhere to keep envelope bytes, so it can
    hold no envelope a relay could serve: one that has any is refused, not guessed at.
    """
    schema_table.create(conn)
    if conn.dialect.name != "postgresql":
        return
    if conn.execute(sa.select(sa.func.count()).select_from(envelopes_table)).scalar():
        raise StorageSchemaError(
            "the relay database holds envelopes without their bytes (layout 2 on PostgreSQL)"
        )
    postgres_metadata.create_all(conn)
    _zero_usage(conn)


def _zero_usage(conn: sa.Connection) -> None:
    conn.execute(usage_table.insert(), [
        {"stripe": n, "envelopes": 0, "bytes": 0} for n in range(USAGE_STRIPES)
    ])


# _STEPS[v - 1] upgrades a database of version v to v + 1.
_STEPS: tuple[Callable[[sa.Connection], None], ...] = (_from_seq_order, _versioned)
assert len(_STEPS) == SCHEMA_VERSION - 1  # noqa: S101 - one step per version
