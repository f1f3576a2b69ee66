"""The embedded relay backend: SQLite rows plus one file per envelope.

    HOME/relay.db                  SQLite (WAL, synchronous=FULL): the tables of
                                   `schema` (the envelope and tombstone tables are
                                   `WITHOUT ROWID`, keyed by the random envelope id,
                                   so no row number records deposit order)
    HOME/envelopes/<mb>/<id hex>   the envelope bytes, exactly as deposited; <mb> is
                                   the first byte of the mailbox id in hex

Envelope files get the hour as their access and modification time (reads use
O_NOATIME), and the directories they live in get it as their modification time; after
every write, `relay.db`, its WAL and HOME get the current hour too (`_after_write`), so
a copy of the home that keeps modification times keeps no exact time. The kernel's
inode change times (ctime) cannot be set and stay exact; `relay.db-shm`, written
through a memory map, is stamped by the kernel when its pages are written back.

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

Durability: bytes to a temporary file, fsync, a link to the final name (which fails
if an envelope is stored under it: that answers a racing retry), fsync of the
directory, then the row. Deposits that arrive together share the last two steps
(`GroupCommit`): each directory is synced once for all of their files in it, and
their rows are inserted in one transaction, one commit; each is answered once that
commit is durable. A batch (`put_many`) places all of its files first, holding their
locks (taken in stripe order), and commits their rows together the same way.
Removing deletes the row (and writes its tombstone in the same
transaction), then the file. Puts and removals of one envelope id hold the same lock
(a put until its row is committed), so a file without a row is crash debris: a
deposit that was never acknowledged to its sender. Opening the storage removes such
files and temporary files. Locks are taken in the order space -> envelope id ->
counters, never the other way.

One process owns a home at a time (the locks, counters and the set of revoked gateway
keys, which deposits consult, are in-process); several
relay processes share one PostgreSQL database instead (`bridge.relay.storage.postgres`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridge.relay.storage.group_commit import GroupCommit
from bridge.relay.storage.protocol import (
    EnvelopeStatus,
    NewEnvelope,
    PutOutcome,
    PutResult,
    StorageFull,
    StorageUsage,
    SweepResult,
    all_answered,
    coarse_hour,
    depositor_tag,
    put_each,
    put_in_rounds,
)
from bridge.relay.storage.rows import (
    DEFAULT_RETENTION,
    PURGE_BATCH,
    PurgeHook,
    SqlRows,
    check_fits_quota,
    expiry_cutoff,
)
from bridge.relay.storage.schema import envelopes_table, prepare
from bridge.revocation import GatewayRevocation

_ID_FILE_RE = re.compile(r"[0-9a-f]{32}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_LOCK_STRIPES = 64
_NOATIME = getattr(os, "O_NOATIME", 0)
_INSERT = envelopes_table.insert()  # compiled once, executed with many rows


@dataclass(frozen=True)
class _Deposit:
    directory: Path  # where its file was linked (synced before the row is committed)
    row: dict[str, Any]


@dataclass(frozen=True)
class _Victim:
    envelope_id: bytes
    mailbox_id: bytes


class SqliteFileStorage(SqlRows):
    """The embedded backend: SQLite rows plus one file per envelope under `home`."""

    def __init__(
        self,
        home: Path,
        *,
        quota: int | None = None,
        retention: int = DEFAULT_RETENTION,
        on_purge: PurgeHook | None = None,
    ) -> None:
        """`on_purge(reason, count)` hears of every purge: "quota" or "expired"."""
        self._home = home
        self._on_purge = on_purge
        self._quota = quota
        self._retention = retention
        self._envelope_dir = home / "envelopes"
        self._dated = (home / "relay.db", home / "relay.db-wal", home)  # see _after_write
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._envelope_dir.mkdir(mode=0o700, exist_ok=True)
        engine = sa.create_engine(
            sa.URL.create("sqlite", database=str(home / "relay.db")), hide_parameters=True,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        super().__init__(engine)
        try:
            with engine.begin() as conn:
                prepare(conn)
        except BaseException:
            engine.dispose()
            raise
        self._known_shards: set[str] = set()
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
        self._space = threading.Condition()  # one purge decision at a time; notified as
        # deposits in flight end, so a deposit waiting for room can purge what they stored
        self._counters = threading.Lock()  # _stored, _reserved, _revoked
        self._commits = GroupCommit(self._insert_rows)
        self._writer: sa.Connection | None = None  # the group commits' (one at a time)
        self._remove_leftovers()
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.sum(envelopes_table.c.size))).scalar()
        self._stored = int(total or 0)  # bytes of stored envelopes
        self._reserved = 0  # bytes of deposits in flight
        # This process alone writes them (see the module docstring): kept in memory.
        self._revoked = frozenset(r.gateway_key for r in self.gateway_revocations())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._engine.dispose()

    @property
    def stored_bytes(self) -> int:
        with self._counters:
            return self._stored

    def revoked_gateway_keys(self) -> frozenset[bytes]:
        return self._revoked

    def put_gateway_revocation(self, revocation: GatewayRevocation) -> None:
        super().put_gateway_revocation(revocation)
        with self._counters:
            self._revoked |= {revocation.gateway_key}

    # envelopes

    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        digest = hashlib.sha256(data).digest()
        path = self._path(mailbox_id, envelope_id)
        if path.exists():  # a retry: answer without reserving (or purging) anything
            known = self._stored_outcome(mailbox_id, envelope_id, digest)
            if known is not None:
                return known
        size = len(data)
        self._reserve(size)
        stored = False
        try:
            with self._lock(envelope_id):
                known = self._place_file(path, data, received, functools.partial(
                    self._stored_outcome, mailbox_id, envelope_id, digest,
                ))
                if known is not None:
                    return known
                known = self._commit_row(path, {
                    "envelope_id": envelope_id, "mailbox_id": mailbox_id, "size": size,
                    "sha256": digest, "received": received, "tiebreak": secrets.randbits(63),
                    "depositor": depositor_tag(depositor, envelope_id),
                })
                if known is not None:
                    return known
                with self._counters:
                    self._reserved -= size
                    self._stored += size
                self._order.add(envelope_id)
                stored = True
        finally:
            if not stored:
                with self._counters:
                    self._reserved -= size
            with self._space:  # no envelope lock is held here (lock order)
                self._space.notify_all()
        return PutOutcome.CREATED

    def put_many(
        self, envelopes: Sequence[NewEnvelope], received: int, depositor: bytes,
    ) -> list[PutResult]:
        return put_in_rounds(envelopes, functools.partial(
            self._put_distinct, received=received, depositor=depositor,
        ))

    def _put_distinct(
        self, envelopes: list[NewEnvelope], *, received: int, depositor: bytes,
    ) -> list[PutResult]:
        """`put` for envelopes of distinct ids, their rows in one commit: the files
        are placed (durable) under their locks, taken in stripe order, and held
        until the rows are committed."""
        results: list[PutResult | None] = [None] * len(envelopes)
        pending: list[tuple[int, NewEnvelope, bytes, Path]] = []
        for index, envelope in enumerate(envelopes):
            digest = hashlib.sha256(envelope.data).digest()
            path = self._path(envelope.mailbox_id, envelope.envelope_id)
            known = self._stored_outcome(envelope.mailbox_id, envelope.envelope_id, digest) \
                if path.exists() else None
            if known is not None:
                results[index] = known
            elif self._quota is not None and len(envelope.data) > self._quota:
                results[index] = StorageFull("envelope is larger than the relay's whole quota")
            else:
                pending.append((index, envelope, digest, path))
        if not pending:
            return all_answered(results)
        reserved = sum(len(envelope.data) for _, envelope, _, _ in pending)
        try:
            self._reserve(reserved)
        except StorageFull:  # no room for all at once: one by one, as far as they fit
            alone = put_each(self, [envelope for _, envelope, _, _ in pending], received,
                             depositor)
            for (index, _, _, _), result in zip(pending, alone, strict=True):
                results[index] = result
            return all_answered(results)
        try:
            with contextlib.ExitStack() as held:
                for stripe in sorted({self._stripe(e.envelope_id) for _, e, _, _ in pending}):
                    held.enter_context(self._locks[stripe])
                placed = self._place_files(pending, received, depositor, results)
                errors = self._commits.commit_all(
                    [_Deposit(path.parent, row) for _, path, row in placed]
                )
                reserved -= self._settle_rows(placed, errors, results)
        finally:
            with self._counters:
                self._reserved -= reserved
            with self._space:  # no envelope lock is held here (lock order)
                self._space.notify_all()
        return all_answered(results)

    def _place_files(
        self, pending: list[tuple[int, NewEnvelope, bytes, Path]], received: int,
        depositor: bytes, results: list[PutResult | None],
    ) -> list[tuple[int, Path, dict[str, Any]]]:
        """Place the files of `pending` (index, envelope, digest, path): the (index,
        path, row) of each placed; the others' answers go to `results`."""
        placed: list[tuple[int, Path, dict[str, Any]]] = []
        for index, envelope, digest, path in pending:
            mailbox_id, envelope_id = envelope.mailbox_id, envelope.envelope_id
            try:
                known = self._place_file(path, envelope.data, received, functools.partial(
                    self._stored_outcome, mailbox_id, envelope_id, digest,
                ))
            except StorageFull as full:
                results[index] = full
                continue
            if known is not None:
                results[index] = known
                continue
            placed.append((index, path, {
                "envelope_id": envelope_id, "mailbox_id": mailbox_id,
                "size": len(envelope.data), "sha256": digest, "received": received,
                "tiebreak": secrets.randbits(63),
                "depositor": depositor_tag(depositor, envelope_id),
            }))
        return placed

    def _settle_rows(
        self, placed: list[tuple[int, Path, dict[str, Any]]],
        errors: list[BaseException | None], results: list[PutResult | None],
    ) -> int:
        """Answer each placed envelope by what its row's commit did; the bytes now
        stored. An error other than StorageFull is raised once all are settled."""
        stored = 0
        failure: BaseException | None = None
        for (index, path, row), error in zip(placed, errors, strict=True):
            if error is None:
                with self._counters:
                    self._reserved -= row["size"]
                    self._stored += row["size"]
                stored += row["size"]
                self._order.add(row["envelope_id"])
                results[index] = PutOutcome.CREATED
                continue
            try:
                results[index] = self._row_failed(path, row, error)
            except StorageFull as full:
                results[index] = full
            except BaseException as other:  # noqa: BLE001 - raised below
                failure = failure or other
        if failure is not None:
            raise failure
        return stored

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

    def sweep(self, now: float) -> SweepResult:
        cutoff = expiry_cutoff(now, self._retention)
        e = envelopes_table.c
        expired = 0
        hour = coarse_hour(now)
        while True:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(e.envelope_id, e.mailbox_id).where(e.received <= cutoff)
                    .limit(PURGE_BATCH)
                ).all()
            for row in rows:
                expired += self._remove(
                    _Victim(row.envelope_id, row.mailbox_id), EnvelopeStatus.EXPIRED, hour
                )
            if len(rows) < PURGE_BATCH:
                break
        forgotten = self._forget_tombstones(cutoff)
        self._after_write(hour)
        if expired and self._on_purge is not None:
            self._on_purge("expired", expired)
        return SweepResult(expired, forgotten)

    def usage(self) -> StorageUsage:
        t = envelopes_table.c
        with self._engine.connect() as conn:
            count, total = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.size), 0))
            ).one()
        return StorageUsage(envelopes=int(count), stored_bytes=int(total))

    # internals

    def _stored_outcome(
        self, mailbox_id: bytes, envelope_id: bytes, digest: bytes
    ) -> PutOutcome | None:
        with self._engine.connect() as conn:
            return self._outcome_if_stored(conn, mailbox_id, envelope_id, digest)

    def _reserve(self, size: int) -> None:
        """Count `size` bytes as in flight, purging the oldest envelopes to make room."""
        quota = self._quota
        if quota is None:
            with self._counters:
                self._reserved += size
            return
        check_fits_quota(size, quota)
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
        with self._engine.connect() as conn:
            rows = self._oldest_hour(conn)
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
            self._order.forget(envelope_id)
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
            self._write_tombstones(conn, [(envelope_id, row.depositor)], reason, hour)
        self._after_write(hour)
        return int(row.size)

    def _after_write(self, hour: int) -> None:
        # The database, its WAL and the home get the hour too, so a copy of the home
        # that keeps modification times (a backup, rsync, tar) keeps no exact time.
        for path in self._dated:
            with contextlib.suppress(FileNotFoundError):
                _set_hour(path, hour)

    def _path(self, mailbox_id: bytes, envelope_id: bytes) -> Path:
        return self._envelope_dir / mailbox_id[:1].hex() / envelope_id.hex()

    def _lock(self, envelope_id: bytes) -> threading.Lock:
        return self._locks[self._stripe(envelope_id)]

    @staticmethod
    def _stripe(envelope_id: bytes) -> int:
        return envelope_id[0] % _LOCK_STRIPES

    def _commit_row(self, path: Path, row: dict[str, Any]) -> PutOutcome | None:
        """Commit the row of the file just placed at `path`, with the rows of deposits
        waiting at the same time: None once durable, else what `_row_failed` says."""
        try:
            self._commits.commit(_Deposit(path.parent, row))
        except BaseException as exc:
            return self._row_failed(path, row, exc)
        return None

    def _row_failed(self, path: Path, row: dict[str, Any], exc: BaseException) -> PutOutcome:
        """After the row of `path` failed with `exc`: if a row is stored under its id
        (one whose file a removal on a full disk took), that one's outcome; a
        conflicting file is removed again. Otherwise the file is removed and `exc`
        raised (StorageFull if the disk is full)."""
        if isinstance(exc, sa.exc.IntegrityError):
            known = self._stored_outcome(row["mailbox_id"], row["envelope_id"], row["sha256"])
            if known is not PutOutcome.DUPLICATE:  # the same bytes restore its file
                path.unlink(missing_ok=True)
            if known is None:
                raise exc
            return known
        path.unlink(missing_ok=True)
        if isinstance(exc, sa.exc.OperationalError) and _is_disk_full(exc):
            raise StorageFull("relay storage is full") from None
        raise exc

    def _place_file(
        self, path: Path, data: bytes, hour: int, stored: Callable[[], PutOutcome | None]
    ) -> PutOutcome | None:
        """Write `path` durably, dated `hour`, but for its directory (synced by the commit
        of its row); callers hold the lock. If an envelope is stored under that name,
        `stored()` instead (None: written). It replaces only crash debris. StorageFull
        if the disk is full; nothing is left behind then."""
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
                try:  # a link, unlike a rename, never replaces a stored envelope
                    os.link(temporary, path)
                except FileExistsError:
                    known = stored()
                    if known is not None:
                        _set_hour(shard, hour)
                        return known
                    os.replace(temporary, path)  # crash debris: a file without its row
            finally:
                temporary.unlink(missing_ok=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("relay storage is full") from None
            raise
        return None

    def _insert_rows(self, deposits: Sequence[_Deposit]) -> None:
        """Sync the deposits' directories, then insert their rows in one transaction
        (`GroupCommit` calls this once for all the deposits waiting together)."""
        hours = {deposit.directory: deposit.row["received"] for deposit in deposits}
        for directory, hour in hours.items():
            _set_hour(directory, hour)
            _fsync_dir(directory)
        if self._writer is None:  # kept: a checkout per commit costs more than the insert
            self._writer = self._engine.connect()
        with self._writer.begin():
            self._writer.execute(_INSERT, [deposit.row for deposit in deposits])
        self._after_write(max(hours.values()))

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
