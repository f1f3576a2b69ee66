"""The scale-out relay backend: every row and every envelope's bytes in PostgreSQL.

Any number of relay processes, on any number of hosts, may serve one database at
once: what must hold across them is held by the database, and nothing a process
keeps in memory is needed for correctness (the in-hour order of `ArrivalOrder` is
a courtesy only, see `rows`).

Transactions (READ COMMITTED, synchronous commit as the server is configured):

- Deposit: one transaction inserts the row (`ON CONFLICT DO NOTHING`: a racing
  deposit of the same id waits for the first and then finds it, DUPLICATE or
  CONFLICT) and the bytes; under a quota it then takes the schema's quota lock (a
  transaction-scoped advisory lock), reads the stored bytes, purges the oldest
  committed envelopes until its own fits, and adds itself to the usage counters. The
  lock is held to the commit, so quota decisions are made one at a time across all
  processes, each seeing every earlier one committed: stored bytes never exceed the
  quota. Until its commit a deposit is invisible, so it is counted once, whole, or
  not at all.
- Acknowledgement, purge and expiry delete the row and its bytes and write the
  tombstone in one transaction; the DELETE takes the row lock, so of an ack and a
  purge racing for one envelope exactly one removes it and counts it.
- Usage is `relay_usage`: a few counter rows, each transaction adding its net change
  to one chosen at random as its last statement, so removals seldom wait for each
  other, and sums read under the quota lock see every committed change.

Lock order, which keeps transactions free of deadlocks: a deposit's own new row,
then the quota lock, then envelope rows (oldest first), their bytes, tombstones, and
a usage row last. Nobody holds a usage row while waiting for anything.

Errors, mapped for every statement by the engine's `handle_error` hook: disk full
(SQLSTATE 53100: a table, its index or TOAST could not grow) is `StorageFull` (507)
and the transaction is rolled back whole. That holds for an acknowledgement too: its
tombstone needs room, and a deleted row frees none until VACUUM, so on a full disk
it is refused and the gateway acknowledges again later. A connection lost or
refused, a server shutting down or out of connections is `StorageUnavailable`
(503), so a gateway fails over to its next relay; the pool reconnects on the next
request. Anything else stays an internal error.

What a database operator sees beyond the shared tables: PostgreSQL itself keeps
each row's inserting transaction id (`xmin`) and a write-ahead log, both of which
order deposits; the embedded backend keeps neither.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import secrets
import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bridge.relay.storage.protocol import (
    EnvelopeStatus,
    NewEnvelope,
    PutOutcome,
    PutResult,
    StorageFull,
    StorageUnavailable,
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
from bridge.relay.storage.schema import (
    QUOTA_LOCK,
    USAGE_STRIPES,
    envelope_bytes_table,
    envelopes_table,
    prepare,
    usage_table,
)

# A deposit's statements, built and compiled once (executed with its values).
_INSERT_ROW = pg_insert(envelopes_table).on_conflict_do_nothing().returning(
    envelopes_table.c.envelope_id
)
_INSERT_BYTES = envelope_bytes_table.insert()
_COUNT = usage_table.update().where(usage_table.c.stripe == sa.bindparam("chosen")).values(
    envelopes=usage_table.c.envelopes + sa.bindparam("added"),
    bytes=usage_table.c.bytes + sa.bindparam("added_bytes"),
)
_QUOTA_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()), :k)") \
    .bindparams(k=QUOTA_LOCK)
_STORED_BYTES = sa.select(sa.func.coalesce(sa.func.sum(usage_table.c.bytes), 0))
_DISK_FULL = "53100"
_UNAVAILABLE_STATES = ("08", "53", "57P01", "57P02", "57P03")  # prefixes of SQLSTATEs


def engine_url(url: str) -> sa.URL:
    """`postgresql://...` as SQLAlchemy's URL for psycopg (version 3)."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+psycopg")


class PostgresStorage(SqlRows):
    """All relay state in the PostgreSQL database at `url` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        quota: int | None = None,
        retention: int = DEFAULT_RETENTION,
        on_purge: PurgeHook | None = None,
        pool_size: int = 5,
    ) -> None:
        """`on_purge(reason, count)` hears of this process's purges: "quota" or "expired"."""
        target = engine_url(url)
        engine = sa.create_engine(
            target, hide_parameters=True, pool_size=pool_size, max_overflow=10,
        )
        sa.event.listen(engine, "handle_error", _map_error)
        super().__init__(engine)
        self._quota = quota
        self._retention = retention
        self._on_purge = on_purge
        try:
            with engine.begin() as conn:
                prepare(conn)
        except StorageUnavailable:
            engine.dispose()
            where = target.set(query={}).render_as_string(hide_password=True)
            raise StorageUnavailable(f"cannot reach the relay database {where}") from None
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    @property
    def stored_bytes(self) -> int:
        return self.usage().stored_bytes

    # envelopes

    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        size = len(data)
        check_fits_quota(size, self._quota)
        row = _row(NewEnvelope(mailbox_id, envelope_id, data), received, depositor)
        digest = row["sha256"]
        while True:
            with self._engine.begin() as conn:
                inserted = conn.execute(_INSERT_ROW, row).first()
                if inserted is None:
                    known = self._outcome_if_stored(conn, mailbox_id, envelope_id, digest)
                    if known is not None:
                        return known
                    continue  # removed since it conflicted: try again
                conn.execute(_INSERT_BYTES, {"envelope_id": envelope_id, "data": data})
                purged = self._make_room(conn, [envelope_id], size)
                self._count(conn, 1 - len(purged), size - sum(s for _, s in purged))
            break
        self._order.add(envelope_id)
        for victim, _ in purged:
            self._order.forget(victim)
        if purged and self._on_purge is not None:
            self._on_purge("quota", len(purged))
        return PutOutcome.CREATED

    def put_many(
        self, envelopes: Sequence[NewEnvelope], received: int, depositor: bytes,
    ) -> builtins.list[PutResult]:
        return put_in_rounds(envelopes, functools.partial(
            self._put_distinct, received=received, depositor=depositor,
        ))

    def _put_distinct(
        self, envelopes: builtins.list[NewEnvelope], *, received: int, depositor: bytes,
    ) -> builtins.list[PutResult]:
        """`put` for envelopes of distinct ids in one transaction (one quota decision
        for all); if they do not fit together, one by one."""
        results: builtins.list[PutResult | None] = [None] * len(envelopes)
        rows: builtins.list[tuple[int, NewEnvelope, dict[str, Any]]] = []
        for index, envelope in enumerate(envelopes):
            if self._quota is not None and len(envelope.data) > self._quota:
                results[index] = StorageFull("envelope is larger than the relay's whole quota")
            else:
                rows.append((index, envelope, _row(envelope, received, depositor)))
        inserted: builtins.list[tuple[int, NewEnvelope]] = []
        again: builtins.list[tuple[int, NewEnvelope]] = []  # removed since they conflicted
        purged: builtins.list[tuple[bytes, int]] = []
        try:
            with self._engine.begin() as conn:
                for index, envelope, row in rows:
                    if conn.execute(_INSERT_ROW, row).first() is not None:
                        inserted.append((index, envelope))
                        continue
                    known = self._outcome_if_stored(
                        conn, envelope.mailbox_id, envelope.envelope_id, row["sha256"]
                    )
                    if known is None:
                        again.append((index, envelope))
                    else:
                        results[index] = known
                if inserted:
                    conn.execute(_INSERT_BYTES, [
                        {"envelope_id": envelope.envelope_id, "data": envelope.data}
                        for _, envelope in inserted
                    ])
                    size = sum(len(envelope.data) for _, envelope in inserted)
                    purged = self._make_room(
                        conn, [envelope.envelope_id for _, envelope in inserted], size
                    )
                    self._count(conn, len(inserted) - len(purged),
                                size - sum(s for _, s in purged))
        except StorageFull:  # rolled back whole: one by one, as far as they fit
            again = [(index, envelope) for index, envelope, _ in rows]
            inserted, purged = [], []
        for index, envelope in inserted:
            self._order.add(envelope.envelope_id)
            results[index] = PutOutcome.CREATED
        for victim, _ in purged:
            self._order.forget(victim)
        if purged and self._on_purge is not None:
            self._on_purge("quota", len(purged))
        alone = put_each(self, [envelope for _, envelope in again], received, depositor)
        for (index, _), result in zip(again, alone, strict=True):
            results[index] = result
        return all_answered(results)

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        e, b = envelopes_table.c, envelope_bytes_table.c
        with self._engine.connect() as conn:
            data = conn.execute(
                sa.select(b.data).join_from(envelope_bytes_table, envelopes_table,
                                            e.envelope_id == b.envelope_id)
                .where(e.envelope_id == envelope_id, e.mailbox_id == mailbox_id)
            ).scalar()
        return None if data is None else bytes(data)

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        e = envelopes_table.c
        hour = coarse_hour(time.time())
        with self._engine.begin() as conn:
            removed = self._remove(
                conn, [e.envelope_id == envelope_id, e.mailbox_id == mailbox_id],
                EnvelopeStatus.DELIVERED, hour,
            )
            self._count(conn, -len(removed), -sum(size for _, size in removed))
        self._order.forget(envelope_id)
        return bool(removed)

    def sweep(self, now: float) -> SweepResult:
        cutoff = expiry_cutoff(now, self._retention)
        hour = coarse_hour(now)
        e = envelopes_table.c
        expired = 0
        while True:
            with self._engine.begin() as conn:
                # Rows another transaction holds (an ack, another relay's sweep) are
                # left to it.
                ids = conn.execute(
                    sa.select(e.envelope_id).where(e.received <= cutoff)
                    .limit(PURGE_BATCH).with_for_update(skip_locked=True)
                ).scalars().all()
                removed = self._remove(
                    conn, [e.envelope_id.in_(ids)], EnvelopeStatus.EXPIRED, hour
                ) if ids else []
                self._count(conn, -len(removed), -sum(size for _, size in removed))
            expired += len(removed)
            for envelope_id, _ in removed:
                self._order.forget(envelope_id)
            if len(ids) < PURGE_BATCH:
                break
        forgotten = self._forget_tombstones(cutoff)
        if expired and self._on_purge is not None:
            self._on_purge("expired", expired)
        return SweepResult(expired, forgotten)

    def usage(self) -> StorageUsage:
        u = usage_table.c
        with self._engine.connect() as conn:
            count, total = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(u.envelopes), 0),
                          sa.func.coalesce(sa.func.sum(u.bytes), 0))
            ).one()
        return StorageUsage(envelopes=int(count), stored_bytes=int(total))

    # internals

    def _make_room(
        self, conn: sa.Connection, own: Collection[bytes], size: int
    ) -> builtins.list[tuple[bytes, int]]:
        """Under the quota lock, purge the oldest envelopes (not those of `own`, the
        transaction's new ones) until `size` more bytes fit.

        The (id, size) of each envelope purged; StorageFull if nothing is left to purge.
        """
        quota = self._quota
        if quota is None:
            return []
        conn.execute(_QUOTA_LOCK)
        e = envelopes_table.c
        hour = coarse_hour(time.time())
        purged: builtins.list[tuple[bytes, int]] = []
        while True:
            # Each statement sees every transaction committed before it (READ COMMITTED):
            # removals racing with this one are counted as soon as they are done.
            stored = int(conn.execute(_STORED_BYTES).scalar_one())
            need = stored - sum(s for _, s in purged) + size - quota
            if need <= 0:
                return purged
            chosen = []
            for row in self._oldest_hour(conn, excluding=own):
                if need <= 0:
                    break
                chosen.append(row.envelope_id)
                need -= row.size
            if not chosen:
                raise StorageFull("relay storage is full")
            purged += self._remove(conn, [e.envelope_id.in_(chosen)], EnvelopeStatus.PURGED,
                                   hour)

    def _remove(
        self, conn: sa.Connection, where: builtins.list[Any], reason: EnvelopeStatus,
        hour: int,
    ) -> builtins.list[tuple[bytes, int]]:
        """Delete the envelopes `where` selects, with their bytes, and tombstone them."""
        e, b = envelopes_table.c, envelope_bytes_table.c
        rows = conn.execute(
            envelopes_table.delete().where(*where).returning(e.envelope_id, e.size, e.depositor)
        ).all()
        if not rows:
            return []
        ids = [row.envelope_id for row in rows]
        conn.execute(envelope_bytes_table.delete().where(b.envelope_id.in_(ids)))
        self._write_tombstones(conn, [(row.envelope_id, row.depositor) for row in rows],
                               reason, hour)
        return [(row.envelope_id, int(row.size)) for row in rows]

    def _count(self, conn: sa.Connection, envelopes: int, size: int) -> None:
        """Add a transaction's net change to one usage row (its last statement)."""
        if not envelopes and not size:
            return
        conn.execute(_COUNT, {
            "chosen": secrets.randbelow(USAGE_STRIPES), "added": envelopes, "added_bytes": size,
        })


def _row(envelope: NewEnvelope, received: int, depositor: bytes) -> dict[str, Any]:
    """An envelope's row: what its outer header shows, its digest, hour and depositor tag."""
    return {
        "envelope_id": envelope.envelope_id, "mailbox_id": envelope.mailbox_id,
        "size": len(envelope.data), "sha256": hashlib.sha256(envelope.data).digest(),
        "received": received, "tiebreak": secrets.randbits(63),
        "depositor": depositor_tag(depositor, envelope.envelope_id),
    }


def _map_error(context: sa.engine.ExceptionContext) -> None:
    """Raise, for every statement and connection of the engine, what the relay answers:
    disk full as StorageFull (507), an unreachable database as StorageUnavailable (503)."""
    error = context.original_exception
    state = getattr(error, "sqlstate", None)
    if state == _DISK_FULL:
        raise StorageFull("relay storage is full")
    if context.is_disconnect or (state is None and isinstance(error, psycopg.OperationalError)) \
            or (state is not None and state.startswith(_UNAVAILABLE_STATES)):
        raise StorageUnavailable()
