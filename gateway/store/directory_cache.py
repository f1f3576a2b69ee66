"""A local replica of the relays' signed directory records.

Rows hold exactly what relays serve: the opaque lookup id, the sealed entry and
the root's signature; no address is ever in clear. The cache trusts nothing it
returns: whoever reads a record verifies its signature (`verify_publisher`) and
opens it, as for a record fresh from a relay.
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

    def put_many(self, records: Sequence[DirectoryRecord]) -> None:
        """Insert or replace these records by lookup id (the last duplicate wins), atomically."""
        latest = {record.lookup_id: record for record in records}
        if not latest:
            return
        now = utc_now()
        with writing(self._engine) as connection:
            for lookup_id, record in latest.items():
                values = {"sealed": record.sealed, "signature": record.signature, "fetched_at": now}
                replaced = connection.execute(
                    update(DirectoryRecordRow)
                    .where(col(DirectoryRecordRow.lookup_id) == lookup_id)
                    .values(values)
                )
                if replaced.rowcount == 0:
                    connection.execute(
                        insert(DirectoryRecordRow).values(lookup_id=lookup_id, **values)
                    )

    def get(self, lookup_id: bytes) -> DirectoryRecord | None:
        statement = select(
            col(DirectoryRecordRow.sealed), col(DirectoryRecordRow.signature)
        ).where(col(DirectoryRecordRow.lookup_id) == lookup_id)
        with reading(self._engine) as connection:
            row = connection.execute(statement).first()
        if row is None:
            return None
        sealed, signature = row
        return DirectoryRecord(lookup_id=lookup_id, sealed=sealed, signature=signature)
