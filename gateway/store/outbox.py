"""The durable outbox: sealed envelopes kept until one relay has acknowledged them.

`put` commits (on SQLite: fsyncs) every envelope of one submission in one
transaction before it returns; the SMTP 250 is sent only after that. The delivery
worker takes `due` entries, removes an entry once a relay acknowledged it
(`delivered`) or schedules the next try (`retry_later`). An entry holds only the
sealed envelope, its random id and the relay URLs: no address, no content.
`last_error` is a short reason from the worker (a status or exception name),
trimmed to one line; callers must not put content or addresses in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.store.db import (
    DuplicateEnvelope,
    InvalidValue,
    reading,
    relays_from_json,
    relays_to_json,
    utc,
    utc_now,
    writing,
)
from gateway.store.models import OutboxItem

MAX_ERROR_LEN = 200


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    envelope_id: bytes
    envelope: bytes
    relays: tuple[str, ...]
    attempts: int


_INSERT = insert(OutboxItem)
_SELECT_DUE = (
    select(
        col(OutboxItem.id),
        col(OutboxItem.envelope_id),
        col(OutboxItem.envelope),
        col(OutboxItem.relays),
        col(OutboxItem.attempts),
    )
    .where(col(OutboxItem.next_attempt) <= bindparam("now"))
    .order_by(col(OutboxItem.next_attempt), col(OutboxItem.id))
    .limit(bindparam("limit"))
)
_DELETE = delete(OutboxItem).where(col(OutboxItem.id) == bindparam("entry_id"))
_RETRY = (
    update(OutboxItem)
    .where(col(OutboxItem.id) == bindparam("entry_id"))
    .values(
        attempts=col(OutboxItem.attempts) + 1,
        next_attempt=bindparam("at"),
        last_error=bindparam("error"),
    )
)
_COUNT = select(func.count()).select_from(OutboxItem)


def _one_line(error: str) -> str:
    return " ".join(error.split())[:MAX_ERROR_LEN]


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, items: Sequence[tuple[bytes, bytes, Sequence[str]]]) -> None:
        """Keep (envelope_id, envelope, relays) items; all or none, durable on return.

        Raises `DuplicateEnvelope` (nothing kept) if an envelope id is already queued,
        `InvalidValue` for an empty envelope id or relay list.
        """
        now = utc_now()
        rows = []
        for envelope_id, envelope, relays in items:
            if not envelope_id:
                raise InvalidValue("envelope id is empty")
            relays_json = relays_to_json(relays)
            if relays_json == "[]":
                raise InvalidValue("an envelope needs at least one relay")
            rows.append(
                {
                    "envelope_id": envelope_id,
                    "envelope": envelope,
                    "relays": relays_json,
                    "attempts": 0,
                    "next_attempt": now,
                    "last_error": None,
                    "created_at": now,
                }
            )
        if not rows:
            return
        try:
            with writing(self._engine) as connection:
                connection.execute(_INSERT, rows)
        except IntegrityError:
            raise DuplicateEnvelope() from None

    def due(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Entries whose next attempt is at or before `now`, oldest schedule first."""
        with reading(self._engine) as connection:
            rows = connection.execute(_SELECT_DUE, {"now": utc(now), "limit": limit}).all()
        return [
            OutboxEntry(
                id=entry_id,
                envelope_id=envelope_id,
                envelope=envelope,
                relays=relays_from_json(relays),
                attempts=attempts,
            )
            for entry_id, envelope_id, envelope, relays, attempts in rows
            if entry_id is not None
        ]

    def delivered(self, *entry_ids: int) -> None:
        """Relays acknowledged these envelopes: forget them, in one transaction.

        An id already gone has no effect.
        """
        if not entry_ids:
            return
        with writing(self._engine) as connection:
            connection.execute(_DELETE, [{"entry_id": entry_id} for entry_id in entry_ids])

    def retry_later(self, entry_id: int, at: datetime, error: str) -> None:
        """Count a failed attempt and schedule the next one (no effect if the entry is gone)."""
        when = utc(at)
        with writing(self._engine) as connection:
            connection.execute(
                _RETRY, {"entry_id": entry_id, "at": when, "error": _one_line(error)}
            )

    def pending_count(self) -> int:
        with reading(self._engine) as connection:
            return connection.execute(_COUNT).scalar_one()
