"""A local replica of the relays' signed directory records.

Rows hold exactly what relays serve: the opaque lookup id, the record version, the
sealed entry and the root's signature; no address is ever in clear. A row is only
ever replaced by a record with a higher version, so a relay (or anyone) serving an
old record cannot roll the replica back. The cache trusts nothing it returns:
whoever reads a record verifies its signature (`verify_publisher`) and opens it, as
for a record fresh from a relay; callers store only records they verified.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, insert, select, update
from sqlmodel import col

from bridge.directory import DirectoryRecord
from gateway.store.db import reading, utc_now, writing
from gateway.store.models import DirectoryRecordRow


class DirectoryCache:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put_many(self, records: Sequence[DirectoryRecord]) -> int:
        """Keep each record whose version is above the stored one, atomically.

        Returns how many rows were inserted or replaced. Among several records of
        one lookup id the highest version counts (the first of equal ones).
        """
        latest: dict[bytes, DirectoryRecord] = {}
        for record in records:
            held = latest.get(record.lookup_id)
            if held is None or record.version > held.version:
                latest[record.lookup_id] = record
        if not latest:
            return 0
        now = utc_now()
        changed = 0
        row = DirectoryRecordRow
        with writing(self._engine) as connection:
            for lookup_id, record in latest.items():
                values = {
                    "version": record.version, "sealed": record.sealed,
                    "signature": record.signature, "fetched_at": now,
                }
                stored = connection.execute(
                    select(col(row.version)).where(col(row.lookup_id) == lookup_id)
                ).scalar()
                if stored is None:
                    connection.execute(insert(row).values(lookup_id=lookup_id, **values))
                elif record.version > stored:
                    connection.execute(
                        update(row).where(col(row.lookup_id) == lookup_id).values(values)
                    )
                else:
                    continue
                changed += 1
        return changed

    def get(self, lookup_id: bytes) -> DirectoryRecord | None:
        row = DirectoryRecordRow
        statement = select(
            col(row.version), col(row.sealed), col(row.signature)
        ).where(col(row.lookup_id) == lookup_id)
        with reading(self._engine) as connection:
            found = connection.execute(statement).first()
        if found is None:
            return None
        version, sealed, signature = found
        return DirectoryRecord(
            lookup_id=lookup_id, version=version, sealed=sealed, signature=signature
        )

    def all(self) -> list[DirectoryRecord]:
        """Every record of the replica (for readers that look for statements by kind)."""
        row = DirectoryRecordRow
        statement = select(
            col(row.lookup_id), col(row.version), col(row.sealed), col(row.signature)
        )
        with reading(self._engine) as connection:
            return [DirectoryRecord(*found) for found in connection.execute(statement)]
