"""The relay's SQL that both backends share, and the policy of age, quota and retention.

`SqlRows` is the base of both backends: it holds their engine and answers everything
that only reads or writes rows (listings, status, directory records, revocations,
tombstones), with the dialect's own INSERT ... ON CONFLICT. The backends add how
envelope bytes are kept and how the quota is held (`SqliteFileStorage`: files and
in-process counters; `PostgresStorage`: a table and the database's locks).

Age: the only times kept are hours. Listings and purges go oldest hour first and,
within an hour, by the order of this process's own deposits, which it keeps in
memory only (`ArrivalOrder`); other envelopes of the hour come first, in random
tiebreak order. That in-memory order is a courtesy to the depositor, never needed
for correctness: a process that restarts, or another relay process on the same
database, orders the hour by tiebreak alone.
"""

from __future__ import annotations

import builtins
import itertools
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bridge.directory import DirectoryRecord
from bridge.relay.storage.protocol import (
    HOUR,
    EnvelopeStatus,
    PutOutcome,
    StatusAnswer,
    StorageFull,
    StoredEnvelope,
    coarse_hour,
    depositor_tag,
)
from bridge.relay.storage.schema import (
    directory_table,
    envelopes_table,
    gateway_revocations_table,
    tombstones_table,
)
from bridge.revocation import GatewayRevocation

PURGE_BATCH = 10_000  # rows of the oldest hour considered per purge step
ARRIVALS_KEPT = 100_000  # deposits whose order a process remembers (a few MiB)
DEFAULT_RETENTION = 30 * 24 * HOUR
PurgeHook = Callable[[str, int], None]  # (reason: "quota" | "expired", count)
_STORED = sa.select(envelopes_table.c.mailbox_id, envelopes_table.c.sha256).where(
    envelopes_table.c.envelope_id == sa.bindparam("envelope_id")
)


def expiry_cutoff(now: float, retention: int) -> int:
    """The latest hour whose envelopes and tombstones have expired at `now`.

    An envelope received in hour H arrived before H + 1h: it expires once that is
    `retention` ago, never earlier.
    """
    return coarse_hour(now) - retention - HOUR


def check_fits_quota(size: int, quota: int | None) -> None:
    if quota is not None and size > quota:
        raise StorageFull("envelope is larger than the relay's whole quota")


class ArrivalOrder:
    """This process's deposit order, in memory only (see the module docstring).

    At most `limit` envelopes are remembered, the earliest forgotten first: on a shared
    database another process may remove an envelope, and this one never hears of it.
    """

    def __init__(self, limit: int = ARRIVALS_KEPT) -> None:
        self._lock = threading.Lock()
        self._arrival: dict[bytes, int] = {}  # in arrival order (dicts keep insertion order)
        self._next = itertools.count()
        self._limit = limit

    def add(self, envelope_id: bytes) -> None:
        with self._lock:
            self._arrival[envelope_id] = next(self._next)
            while len(self._arrival) > self._limit:
                del self._arrival[next(iter(self._arrival))]

    def forget(self, envelope_id: bytes) -> None:
        with self._lock:
            self._arrival.pop(envelope_id, None)

    def key(self, row: Any) -> tuple[int, int, int]:
        """Sort key of a row with envelope_id, received and tiebreak: oldest first."""
        with self._lock:
            arrival = self._arrival.get(row.envelope_id, -1)
        return row.received, arrival, row.tiebreak


class SqlRows:
    """Row operations over `engine` that do not depend on where bytes are kept."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._order = ArrivalOrder()
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

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
        rows = sorted(rows, key=self._order.key)[:limit]
        return [StoredEnvelope(row.envelope_id, row.size, row.received) for row in rows]

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

    # directory

    def put_directory(self, record: DirectoryRecord) -> bool:
        t = directory_table.c
        statement = self._insert(directory_table).values(
            lookup_id=record.lookup_id, version=record.version, sealed=record.sealed,
            signature=record.signature,
        )
        excluded = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[t.lookup_id],
            set_={"version": excluded.version, "sealed": excluded.sealed,
                  "signature": excluded.signature},
            where=excluded.version > t.version,
        ).returning(t.lookup_id)  # rowcount is not told by every driver for an upsert
        with self._engine.begin() as conn:
            stored = conn.execute(upsert).first() is not None
        self._after_write(coarse_hour(time.time()))
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
        statement = self._insert(gateway_revocations_table).values(
            gateway_key=revocation.gateway_key, signature=revocation.signature,
        ).on_conflict_do_nothing()
        with self._engine.begin() as conn:
            conn.execute(statement)
        self._after_write(coarse_hour(time.time()))

    def gateway_revocations(self) -> builtins.list[GatewayRevocation]:
        t = gateway_revocations_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.gateway_key, t.signature).order_by(t.gateway_key))
            return [GatewayRevocation(row.gateway_key, row.signature) for row in rows]

    def revoked_gateway_keys(self) -> frozenset[bytes] | None:
        return None  # a shared database: another process may add one at any time

    # shared pieces of the backends' writes

    def _after_write(self, hour: int) -> None:
        """Called after each committed write, with the current hour; a backend whose
        files keep times (SQLite) stamps them with the hour here."""

    def _outcome_if_stored(
        self, conn: sa.Connection, mailbox_id: bytes, envelope_id: bytes, digest: bytes
    ) -> PutOutcome | None:
        row = conn.execute(_STORED, {"envelope_id": envelope_id}).first()
        if row is None:
            return None
        same = (row.mailbox_id, row.sha256) == (mailbox_id, digest)
        return PutOutcome.DUPLICATE if same else PutOutcome.CONFLICT

    def _write_tombstones(
        self, conn: sa.Connection, removed: builtins.list[tuple[bytes, bytes]],
        reason: EnvelopeStatus, hour: int,
    ) -> None:
        """Tombstones (id, hour, reason, depositor tag) for `removed` (id, tag) pairs."""
        if not removed:
            return
        statement = self._insert(tombstones_table)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[tombstones_table.c.envelope_id],
                set_={"depositor": statement.excluded.depositor,
                      "reason": statement.excluded.reason, "hour": statement.excluded.hour},
            ),
            [{"envelope_id": envelope_id, "depositor": tag, "reason": reason.value,
              "hour": hour} for envelope_id, tag in removed],
        )

    def _forget_tombstones(self, cutoff: int) -> int:
        with self._engine.begin() as conn:
            return int(conn.execute(
                tombstones_table.delete().where(tombstones_table.c.hour <= cutoff)
            ).rowcount)

    def _oldest_hour(self, conn: sa.Connection, *, excluding: Collection[bytes] = ()) -> Any:
        """Rows (id, mailbox, size, received, tiebreak) of the oldest hour, oldest first."""
        e = envelopes_table.c
        where = [e.envelope_id.not_in(excluding)] if excluding else []
        oldest = conn.execute(sa.select(sa.func.min(e.received)).where(*where)).scalar()
        if oldest is None:
            return []
        return sorted(conn.execute(
            sa.select(e.envelope_id, e.mailbox_id, e.size, e.received, e.tiebreak)
            .where(e.received == oldest, *where).order_by(e.tiebreak).limit(PURGE_BATCH)
        ).all(), key=self._order.key)
