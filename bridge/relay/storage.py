"""Where a relay keeps envelopes, their tombstones and directory records.

`EnvelopeStorage` is the Protocol the HTTP layer uses; its methods are synchronous
and may block (the server runs them with `asyncio.to_thread`). `SqliteFileStorage`
is the embedded backend:

    HOME/relay.db                  SQLite (WAL, synchronous=FULL): one row per stored
                                   envelope (ids, size, sha256, hour received, random
                                   tiebreak, depositor tag), one tombstone per envelope
                                   acknowledged, purged or expired (id, hour, reason,
                                   depositor tag), one row per directory record (the
                                   highest version of its lookup id), one per revoked
                                   gateway key
    HOME/envelopes/<mb>/<id hex>   the envelope bytes, exactly as deposited; <mb> is
                                   the first byte of the mailbox id in hex

Time and order: the only times kept are hours. The envelope and tombstone tables are
`WITHOUT ROWID` keyed by the random envelope id, so no row number records deposit
order; listings and purges go oldest hour first and, within an hour, by the order of
this process's own deposits, which it keeps in memory only (after a restart, earlier
envelopes of the hour come first, in random tiebreak order). Envelope files get the
hour as their access and modification time (reads use O_NOATIME), and the directories
they live in get it as their modification time; after every write, `relay.db`, its WAL
and HOME get the current hour too (`_date_database`), so a copy of the home that keeps
modification times (a backup, rsync, tar) keeps no exact time. The kernel's inode
change times (ctime) cannot be set and stay exact; `relay.db-shm`, written through a
memory map, is stamped by the kernel when its pages are written back.

Quota: stored bytes are the sum of envelope sizes. A deposit first reserves its size;
if stored plus reserved bytes would exceed the quota, unfetched envelopes are purged,
oldest first, until it fits (`StorageFull`, 507, when it is larger than the whole
quota); while the room is held by deposits in flight, it waits for them to end. Bytes
on disk therefore never exceed the quota, however many deposits run at once. A write
that fails for lack of disk space (`OSError` on the file, SQLITE_FULL on the row) is
also `StorageFull` and leaves nothing behind; a removal on a full disk deletes the file
first and retries the row, so acknowledgements still free space. Expired envelopes
(older than `retention`) are removed by `sweep`, which also forgets tombstones older
than `retention`.

Depositor tag: BLAKE2b of the depositing gateway's key, keyed by the envelope id.
`status` answers only to the gateway whose key gives the same tag; the stored tags of
one gateway's envelopes are unrelated to each other, and the key is not stored.

Durability: bytes to a temporary file, fsync, rename to the final name, fsync of the
directory, then the row. Removing deletes the row (and writes its tombstone in the same
transaction), then the file. Puts and removals of one envelope id hold the same lock,
so a file without a row is crash debris: a deposit that was never acknowledged to its
sender. Opening the storage removes such files and temporary files. Locks are taken in
the order space -> envelope id -> counters, never the other way.

One process owns a home at a time (the locks and counters are in-process). Storage
receives only what the outside of an envelope shows: it never sees or stores an
address or any plaintext.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import errno
import hashlib
import itertools
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.directory import DirectoryRecord
from bridge.relay.auth import RequestError
from bridge.revocation import GatewayRevocation

HOUR = 3600
DEPOSITOR_TAG_LEN = 16
_ID_FILE_RE = re.compile(r"[0-9a-f]{32}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_LOCK_STRIPES = 64
_PURGE_BATCH = 10_000  # rows of the oldest hour considered per purge step
_DEPOSITOR_PERSON = b"sg-depositor"
_NOATIME = getattr(os, "O_NOATIME", 0)


class PutOutcome(enum.Enum):
    CREATED = "created"  # stored now
    DUPLICATE = "duplicate"  # the same bytes were already stored under this id
    CONFLICT = "conflict"  # different bytes are stored under this id; nothing changed


class EnvelopeStatus(enum.Enum):
    """What happened to a deposited envelope, as its depositor may learn it."""

    PENDING = "pending"  # stored, not yet acknowledged by its recipient
    DELIVERED = "delivered"  # acknowledged (fetched) by the recipient's gateway
    PURGED = "purged"  # removed unfetched to make room under the quota
    EXPIRED = "expired"  # removed unfetched after the retention period
    UNKNOWN = "unknown"  # never stored, tombstone forgotten, or not this gateway's


class StorageFull(RequestError):
    """507: the deposit does not fit (larger than the quota, or the disk is full)."""

    def __init__(self, reason: str) -> None:
        super().__init__(507, reason)


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


@dataclass(frozen=True)
class StatusAnswer:
    status: EnvelopeStatus
    hour: int | None = None  # when it was acknowledged, purged or expired (to the hour)


@dataclass(frozen=True)
class SweepResult:
    expired: int  # envelopes removed
    forgotten: int  # tombstones removed


def coarse_hour(now: float) -> int:
    """The only receive time a relay keeps: `now` rounded down to the hour."""
    seconds = int(now)
    return seconds - seconds % HOUR


def depositor_tag(gateway_key: bytes, envelope_id: bytes) -> bytes:
    """What storage keeps of who deposited an envelope (see the module docstring)."""
    return hashlib.blake2b(
        gateway_key, key=envelope_id, person=_DEPOSITOR_PERSON, digest_size=DEPOSITOR_TAG_LEN
    ).digest()


class EnvelopeStorage(Protocol):
    """What the relay's HTTP layer needs from storage. Ids are raw bytes."""

    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        """Store `data` durably before returning CREATED; never replace other bytes.

        `depositor` is the gateway key that signed the deposit. Raises `StorageFull`.
        """

    def list(self, mailbox_id: bytes, limit: int) -> builtins.list[StoredEnvelope]:
        """At most `limit` envelopes of one mailbox, oldest deposit first."""

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        """The stored bytes, or None if that mailbox holds no such envelope."""

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        """Remove an envelope of that mailbox (tombstone: delivered); False if there was none."""

    def status(self, envelope_id: bytes, depositor: bytes) -> StatusAnswer:
        """The envelope's status if `depositor` deposited it, else UNKNOWN."""

    def sweep(self, now: float) -> SweepResult:
        """Remove envelopes older than the retention period, forget old tombstones."""

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


@dataclass(frozen=True)
class _Victim:
    envelope_id: bytes
    mailbox_id: bytes


class SqliteFileStorage:
    """The embedded backend: SQLite rows plus one file per envelope under `home`."""

    def __init__(
        self,
        home: Path,
        *,
        quota: int | None = None,
        retention: int = 30 * 24 * HOUR,
        on_purge: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_purge(reason, count)` hears of every purge: "quota" or "expired"."""
        self._home = home
        self._on_purge = on_purge
        self._quota = quota
        self._retention = retention
        self._envelope_dir = home / "envelopes"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._envelope_dir.mkdir(mode=0o700, exist_ok=True)
        self._engine = sa.create_engine(
            sa.URL.create("sqlite", database=str(home / "relay.db")), hide_parameters=True,
        )
        sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        with self._engine.begin() as conn:
            _upgrade_seq_table(conn)
        metadata.create_all(self._engine)
        self._known_shards: set[str] = set()
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
        self._space = threading.Condition()  # one purge decision at a time; notified as
        # deposits in flight end, so a deposit waiting for room can purge what they stored
        self._counters = threading.Lock()  # _stored, _reserved, _arrival
        self._arrival: dict[bytes, int] = {}  # this process's deposit order, memory only
        self._next_arrival = itertools.count()
        self._remove_leftovers()
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.sum(envelopes_table.c.size))).scalar()
        self._stored = int(total or 0)  # bytes of stored envelopes
        self._reserved = 0  # bytes of deposits in flight

    def close(self) -> None:
        self._engine.dispose()

    @property
    def stored_bytes(self) -> int:
        with self._counters:
            return self._stored

    # envelopes

    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        digest = hashlib.sha256(data).digest()
        known = self._outcome_if_stored(mailbox_id, envelope_id, digest)
        if known is not None:  # a retry: answer without reserving (or purging) anything
            return known
        size = len(data)
        self._reserve(size)
        stored = False
        try:
            with self._lock(envelope_id):
                known = self._outcome_if_stored(mailbox_id, envelope_id, digest)
                if known is not None:
                    return known
                path = self._path(mailbox_id, envelope_id)
                self._write_file(path, data, received)
                try:
                    with self._engine.begin() as conn:
                        conn.execute(envelopes_table.insert().values(
                            envelope_id=envelope_id, mailbox_id=mailbox_id, size=size,
                            sha256=digest, received=received,
                            tiebreak=secrets.randbits(63),
                            depositor=depositor_tag(depositor, envelope_id),
                        ))
                except sa.exc.OperationalError as exc:
                    path.unlink(missing_ok=True)
                    if _is_disk_full(exc):
                        raise StorageFull("relay storage is full") from None
                    raise
                with self._counters:
                    self._reserved -= size
                    self._stored += size
                    self._arrival[envelope_id] = next(self._next_arrival)
                stored = True
                self._date_database(received)
        finally:
            if not stored:
                with self._counters:
                    self._reserved -= size
            with self._space:  # no envelope lock is held here (lock order)
                self._space.notify_all()
        return PutOutcome.CREATED

    def list(self, mailbox_id: bytes, limit: int) -> builtins.list[StoredEnvelope]:
        t = envelopes_table.c
        columns = (t.envelope_id, t.size, t.received, t.tiebreak)
        query = sa.select(*columns).where(t.mailbox_id == mailbox_id).order_by(
            t.received, t.tiebreak
        )
        with self._engine.connect() as conn:
            rows: builtins.list[Any] = builtins.list(conn.execute(query.limit(limit)))
            if len(rows) == limit:  # the last hour may be cut: order all of it in memory
                last = rows[-1].received
                rows = [row for row in rows if row.received < last]
                rows += conn.execute(query.where(t.received == last)).all()
        rows = sorted(rows, key=self._age_key)[:limit]
        return [StoredEnvelope(row.envelope_id, row.size, row.received) for row in rows]

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        t = envelopes_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(t.size).where(t.envelope_id == envelope_id, t.mailbox_id == mailbox_id)
            ).first()
        if row is None:
            return None
        try:  # O_NOATIME: a read does not record when the envelope was fetched
            fd = os.open(self._path(mailbox_id, envelope_id), os.O_RDONLY | _NOATIME)
        except FileNotFoundError:
            return None  # acknowledged or purged since the row was read
        with os.fdopen(fd, "rb") as file:
            return file.read()

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        hour = coarse_hour(time.time())
        return self._remove(_Victim(envelope_id, mailbox_id), EnvelopeStatus.DELIVERED, hour)

    def status(self, envelope_id: bytes, depositor: bytes) -> StatusAnswer:
        tag = depositor_tag(depositor, envelope_id)
        e, s = envelopes_table.c, tombstones_table.c
        with self._engine.connect() as conn:
            if conn.execute(sa.select(e.depositor).where(e.envelope_id == envelope_id)).scalar() \
                    == tag:
                return StatusAnswer(EnvelopeStatus.PENDING)
            row = conn.execute(
                sa.select(s.depositor, s.reason, s.hour).where(s.envelope_id == envelope_id)
            ).first()
        if row is None or row.depositor != tag:
            return StatusAnswer(EnvelopeStatus.UNKNOWN)
        return StatusAnswer(EnvelopeStatus(row.reason), row.hour)

    def sweep(self, now: float) -> SweepResult:
        # An envelope received in hour H arrived before H + 1h: it expires once that
        # is `retention` ago, never earlier.
        cutoff = coarse_hour(now) - self._retention - HOUR
        e, s = envelopes_table.c, tombstones_table.c
        expired = 0
        hour = coarse_hour(now)
        while True:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(e.envelope_id, e.mailbox_id).where(e.received <= cutoff)
                    .limit(_PURGE_BATCH)
                ).all()
            for row in rows:
                expired += self._remove(
                    _Victim(row.envelope_id, row.mailbox_id), EnvelopeStatus.EXPIRED, hour
                )
            if len(rows) < _PURGE_BATCH:
                break
        with self._engine.begin() as conn:
            forgotten = conn.execute(tombstones_table.delete().where(s.hour <= cutoff)).rowcount
        self._date_database(hour)
        if expired and self._on_purge is not None:
            self._on_purge("expired", expired)
        return SweepResult(expired, forgotten)

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
            stored = bool(conn.execute(statement).rowcount)
        self._date_database(coarse_hour(time.time()))
        return stored

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
        self._date_database(coarse_hour(time.time()))

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

    def _outcome_if_stored(
        self, mailbox_id: bytes, envelope_id: bytes, digest: bytes
    ) -> PutOutcome | None:
        t = envelopes_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(t.mailbox_id, t.sha256).where(t.envelope_id == envelope_id)
            ).first()
        if row is None:
            return None
        same = (row.mailbox_id, row.sha256) == (mailbox_id, digest)
        return PutOutcome.DUPLICATE if same else PutOutcome.CONFLICT

    def _reserve(self, size: int) -> None:
        """Count `size` bytes as in flight, purging the oldest envelopes to make room."""
        quota = self._quota
        if quota is None:
            with self._counters:
                self._reserved += size
            return
        if size > quota:
            raise StorageFull("envelope is larger than the relay's whole quota")
        with self._space:
            while True:
                with self._counters:
                    excess = self._stored + self._reserved + size - quota
                    if excess <= 0:
                        self._reserved += size
                        return
                if self._purge_oldest(excess):
                    continue
                with self._counters:
                    in_flight = self._reserved
                if not in_flight:
                    raise StorageFull("relay storage is full")
                self._space.wait()  # until a deposit in flight is stored (then purgeable)

    def _purge_oldest(self, need: int) -> bool:
        """Remove envelopes of the oldest hour until `need` bytes are free; False if none."""
        e = envelopes_table.c
        with self._engine.connect() as conn:
            oldest = conn.execute(sa.select(sa.func.min(e.received))).scalar()
            if oldest is None:
                return False
            rows = sorted(conn.execute(
                sa.select(e.envelope_id, e.mailbox_id, e.size, e.received, e.tiebreak)
                .where(e.received == oldest).order_by(e.tiebreak).limit(_PURGE_BATCH)
            ).all(), key=self._age_key)
        hour = coarse_hour(time.time())
        freed = purged = 0
        for row in rows:
            if freed >= need:
                break
            if self._remove(_Victim(row.envelope_id, row.mailbox_id), EnvelopeStatus.PURGED, hour):
                freed += row.size
                purged += 1
        if purged and self._on_purge is not None:
            self._on_purge("quota", purged)
        return bool(rows)

    def _age_key(self, row: Any) -> tuple[int, int, int]:
        with self._counters:
            arrival = self._arrival.get(row.envelope_id, -1)
        return row.received, arrival, row.tiebreak

    def _remove(self, victim: _Victim, reason: EnvelopeStatus, hour: int) -> bool:
        """Delete one envelope (row and tombstone in one transaction, then the file).

        On a full disk the transaction itself may find no room (the WAL must grow): then
        the file goes first, which frees its space, and the transaction is tried again.
        """
        envelope_id = victim.envelope_id
        path = self._path(victim.mailbox_id, envelope_id)
        with self._lock(envelope_id):
            try:
                size = self._remove_row(victim, reason, hour)
            except sa.exc.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                path.unlink(missing_ok=True)  # it is going: the recipient has it, or no one will
                size = self._remove_row(victim, reason, hour)
            if size is None:
                return False
            path.unlink(missing_ok=True)
            _set_hour(path.parent, hour)
            with self._counters:
                self._stored -= size
                self._arrival.pop(envelope_id, None)
        return True

    def _remove_row(self, victim: _Victim, reason: EnvelopeStatus, hour: int) -> int | None:
        """Delete the row and write its tombstone; the envelope's size, or None if absent."""
        t = envelopes_table.c
        envelope_id = victim.envelope_id
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(t.size, t.depositor)
                .where(t.envelope_id == envelope_id, t.mailbox_id == victim.mailbox_id)
            ).first()
            if row is None:
                return None
            conn.execute(envelopes_table.delete().where(t.envelope_id == envelope_id))
            tombstone = sqlite_insert(tombstones_table).values(
                envelope_id=envelope_id, depositor=row.depositor, reason=reason.value, hour=hour,
            )
            conn.execute(tombstone.on_conflict_do_update(
                index_elements=[tombstones_table.c.envelope_id],
                set_={"depositor": row.depositor, "reason": reason.value, "hour": hour},
            ))
        self._date_database(hour)
        return int(row.size)

    def _date_database(self, hour: int) -> None:
        """Give the database, its WAL and the home `hour` as their times (after a write)."""
        for path in (self._home / "relay.db", self._home / "relay.db-wal", self._home):
            with contextlib.suppress(FileNotFoundError):
                _set_hour(path, hour)

    def _path(self, mailbox_id: bytes, envelope_id: bytes) -> Path:
        return self._envelope_dir / mailbox_id[:1].hex() / envelope_id.hex()

    def _lock(self, envelope_id: bytes) -> threading.Lock:
        return self._locks[envelope_id[0] % _LOCK_STRIPES]

    def _write_file(self, path: Path, data: bytes, hour: int) -> None:
        """Write `path` durably, dated `hour`; it replaces only crash debris (callers hold
        the lock). StorageFull if the disk is full; nothing is left behind then."""
        shard = path.parent
        temporary = shard / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            self._ensure_shard(shard, hour)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                    os.utime(file.fileno(), (hour, hour))
                os.replace(temporary, path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            _set_hour(shard, hour)
            _fsync_dir(shard)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("relay storage is full") from None
            raise

    def _ensure_shard(self, shard: Path, hour: int) -> None:
        if shard.name in self._known_shards:
            return
        try:
            shard.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            _set_hour(self._envelope_dir, hour)
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
    cursor.execute("PRAGMA secure_delete=ON")  # a removed row's ids do not linger in free pages
    cursor.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_hour(path: Path, hour: int) -> None:
    """Give a file or directory `hour` as its access and modification time."""
    os.utime(path, (hour, hour))


def _is_disk_full(exc: sa.exc.OperationalError) -> bool:
    orig = exc.orig
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


def _upgrade_seq_table(conn: sa.Connection) -> None:
    """Rewrite an envelopes table of the earlier layout (ordered by a global `seq`).

    Its rows keep their ids, sizes and hours and get a random tiebreak; their depositor
    is unknown (an all-zero tag, which no gateway key gives), so their status answers
    `unknown`.
    """
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(envelopes)")}
    if "seq" not in columns:
        return
    conn.exec_driver_sql("ALTER TABLE envelopes RENAME TO envelopes_seq")
    conn.exec_driver_sql("DROP INDEX IF EXISTS envelopes_by_mailbox")
    envelopes_table.create(conn)
    conn.exec_driver_sql(
        "INSERT INTO envelopes (envelope_id, mailbox_id, size, sha256, received, tiebreak,"
        " depositor) SELECT envelope_id, mailbox_id, size, sha256, received,"
        " abs(random() % 9223372036854775807), zeroblob(16) FROM envelopes_seq"
    )
    conn.exec_driver_sql("DROP TABLE envelopes_seq")
