"""Where a relay keeps envelopes and directory records.

`EnvelopeStorage` is the Protocol the HTTP layer uses; its methods are synchronous
and may block (the server runs them with `asyncio.to_thread`). `SqliteFileStorage`
is the embedded backend:

    HOME/relay.db                  SQLite (WAL, synchronous=FULL): one row per envelope
                                   (ids, size, sha256, hour received), one per
                                   directory record (the highest version of its
                                   lookup id), one per revoked gateway key
    HOME/envelopes/<mb>/<id hex>   the envelope bytes, exactly as deposited; <mb> is
                                   the first byte of the mailbox id in hex

The tables are SQLAlchemy Core: plain keyed statements need no ORM session, and the
same `Table` objects serve a PostgreSQL backend. A deposit becomes durable in this
order: bytes to a temporary file, fsync, rename to the final name, fsync of the
directory, then the row. An ack deletes the row, then the file. Puts and deletes of
one envelope id hold the same lock, so a file without a row is crash debris: a
deposit that was never acknowledged to its sender. Opening the storage removes such
files and temporary files.

One process owns a home at a time (the locks are in-process). Storage receives only
what the outside of an envelope shows: it never sees or stores an address or any
plaintext.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.directory import DirectoryRecord
from bridge.revocation import GatewayRevocation

HOUR = 3600
_ID_FILE_RE = re.compile(r"[0-9a-f]{32}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_LOCK_STRIPES = 64


class PutOutcome(enum.Enum):
    CREATED = "created"  # stored now
    DUPLICATE = "duplicate"  # the same bytes were already stored under this id
    CONFLICT = "conflict"  # different bytes are stored under this id; nothing changed


@dataclass(frozen=True)
class StoredEnvelope:
    """One line of a mailbox listing."""

    envelope_id: bytes
    size: int
    received: int  # unix time rounded down to the hour


@dataclass(frozen=True)
class StorageUsage:
    """How much a relay holds, for its metrics and status page."""

    envelopes: int
    stored_bytes: int


def coarse_hour(now: float) -> int:
    """The only receive time a relay keeps: `now` rounded down to the hour."""
    seconds = int(now)
    return seconds - seconds % HOUR


class EnvelopeStorage(Protocol):
    """What the relay's HTTP layer needs from storage. Ids are raw bytes."""

    def put(self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int) -> PutOutcome:
        """Store `data` durably before returning CREATED; never replace other bytes."""

    def list(self, mailbox_id: bytes, limit: int) -> builtins.list[StoredEnvelope]:
        """At most `limit` envelopes of one mailbox, oldest deposit first."""

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        """The stored bytes, or None if that mailbox holds no such envelope."""

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        """Remove an envelope of that mailbox; False if there was none."""

    def put_directory(self, record: DirectoryRecord) -> bool:
        """Store a record unless one of the same lookup id has this or a higher version.

        True if stored; False (nothing changed) otherwise. Compare and write are one
        statement, so two racing publications cannot both win.
        """

    def get_directory(self, lookup_id: bytes) -> DirectoryRecord | None: ...

    def all_directory(self) -> builtins.list[DirectoryRecord]:
        """Every directory record, ordered by lookup id."""

    def put_gateway_revocation(self, revocation: GatewayRevocation) -> None:
        """Keep a (verified) gateway revocation; storing one twice changes nothing."""

    def gateway_revocations(self) -> builtins.list[GatewayRevocation]:
        """Every gateway revocation, ordered by gateway key."""

    def usage(self) -> StorageUsage:
        """Envelopes stored and their bytes, now."""

    def close(self) -> None: ...


metadata = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: alias of the rowid

envelopes_table = sa.Table(
    "envelopes",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("envelope_id", sa.LargeBinary(16), nullable=False, unique=True),
    sa.Column("mailbox_id", sa.LargeBinary(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("received", sa.BigInteger, nullable=False),
    sa.Index("envelopes_by_mailbox", "mailbox_id", "seq"),
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


class SqliteFileStorage:
    """The embedded backend: SQLite rows plus one file per envelope under `home`."""

    def __init__(self, home: Path) -> None:
        self._home = home
        self._envelope_dir = home / "envelopes"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._envelope_dir.mkdir(mode=0o700, exist_ok=True)
        self._engine = sa.create_engine(
            sa.URL.create("sqlite", database=str(home / "relay.db")), hide_parameters=True,
        )
        sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        metadata.create_all(self._engine)
        self._known_shards: set[str] = set()
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
        self._remove_leftovers()

    def close(self) -> None:
        self._engine.dispose()

    # envelopes

    def put(self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int) -> PutOutcome:
        digest = hashlib.sha256(data).digest()
        t = envelopes_table.c
        with self._lock(envelope_id):
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(t.mailbox_id, t.sha256).where(t.envelope_id == envelope_id)
                ).first()
            if row is not None:
                same = (row.mailbox_id, row.sha256) == (mailbox_id, digest)
                return PutOutcome.DUPLICATE if same else PutOutcome.CONFLICT
            self._write_file(self._path(mailbox_id, envelope_id), data)
            with self._engine.begin() as conn:
                conn.execute(envelopes_table.insert().values(
                    envelope_id=envelope_id, mailbox_id=mailbox_id, size=len(data),
                    sha256=digest, received=received,
                ))
        return PutOutcome.CREATED

    def list(self, mailbox_id: bytes, limit: int) -> builtins.list[StoredEnvelope]:
        t = envelopes_table.c
        query = (
            sa.select(t.envelope_id, t.size, t.received)
            .where(t.mailbox_id == mailbox_id).order_by(t.seq).limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredEnvelope(row.envelope_id, row.size, row.received) for row in rows]

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        t = envelopes_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(t.seq).where(t.envelope_id == envelope_id, t.mailbox_id == mailbox_id)
            ).first()
        if row is None:
            return None
        try:
            return self._path(mailbox_id, envelope_id).read_bytes()
        except FileNotFoundError:
            return None  # acknowledged and deleted since the row was read

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        t = envelopes_table.c
        with self._lock(envelope_id):
            with self._engine.begin() as conn:
                deleted = conn.execute(envelopes_table.delete().where(
                    t.envelope_id == envelope_id, t.mailbox_id == mailbox_id
                )).rowcount
            if deleted:
                self._path(mailbox_id, envelope_id).unlink(missing_ok=True)
        return bool(deleted)

    # directory

    def put_directory(self, record: DirectoryRecord) -> bool:
        t = directory_table.c
        statement = sqlite_insert(directory_table).values(
            lookup_id=record.lookup_id, version=record.version, sealed=record.sealed,
            signature=record.signature,
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[t.lookup_id],
            set_={"version": excluded.version, "sealed": excluded.sealed,
                  "signature": excluded.signature},
            where=excluded.version > t.version,
        )
        with self._engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    def get_directory(self, lookup_id: bytes) -> DirectoryRecord | None:
        t = directory_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(t.lookup_id, t.version, t.sealed, t.signature)
                .where(t.lookup_id == lookup_id)
            ).first()
        return None if row is None else DirectoryRecord(*row)

    def all_directory(self) -> builtins.list[DirectoryRecord]:
        t = directory_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.lookup_id, t.version, t.sealed, t.signature).order_by(t.lookup_id)
            ).all()
        return [DirectoryRecord(*row) for row in rows]

    def put_gateway_revocation(self, revocation: GatewayRevocation) -> None:
        statement = sqlite_insert(gateway_revocations_table).values(
            gateway_key=revocation.gateway_key, signature=revocation.signature,
        ).on_conflict_do_nothing()
        with self._engine.begin() as conn:
            conn.execute(statement)

    def gateway_revocations(self) -> builtins.list[GatewayRevocation]:
        t = gateway_revocations_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.gateway_key, t.signature).order_by(t.gateway_key))
            return [GatewayRevocation(row.gateway_key, row.signature) for row in rows]

    def usage(self) -> StorageUsage:
        t = envelopes_table.c
        with self._engine.connect() as conn:
            count, total = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.size), 0))
            ).one()
        return StorageUsage(envelopes=int(count), stored_bytes=int(total))

    # internals

    def _path(self, mailbox_id: bytes, envelope_id: bytes) -> Path:
        return self._envelope_dir / mailbox_id[:1].hex() / envelope_id.hex()

    def _lock(self, envelope_id: bytes) -> threading.Lock:
        return self._locks[envelope_id[0] % _LOCK_STRIPES]

    def _write_file(self, path: Path, data: bytes) -> None:
        """Write `path` durably; it replaces only crash debris (callers hold the lock)."""
        shard = path.parent
        self._ensure_shard(shard)
        temporary = shard / f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_dir(shard)

    def _ensure_shard(self, shard: Path) -> None:
        if shard.name in self._known_shards:
            return
        try:
            shard.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            _fsync_dir(self._envelope_dir)
        self._known_shards.add(shard.name)

    def _remove_leftovers(self) -> None:
        """Delete temporary files and envelope files that have no row (crash debris)."""
        t = envelopes_table.c
        for shard in self._envelope_dir.iterdir():
            if not (shard.is_dir() and _SHARD_RE.fullmatch(shard.name)):
                continue
            low = bytes.fromhex(shard.name)
            where = [t.mailbox_id >= low]
            if low != b"\xff":
                where.append(t.mailbox_id < bytes([low[0] + 1]))
            with self._engine.connect() as conn:
                known = {row.envelope_id.hex() for row in conn.execute(
                    sa.select(t.envelope_id).where(*where)
                )}
            for file in shard.iterdir():
                if file.name.endswith(".tmp") or (
                    _ID_FILE_RE.fullmatch(file.name) and file.name not in known
                ):
                    file.unlink(missing_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
