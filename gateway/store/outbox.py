"""The durable outbox: sealed envelopes kept until one relay has acknowledged them.

`write` commits (on SQLite: fsyncs) its parts in one transaction before it returns;
the SMTP 250 is sent only after the last part of a submission is committed. A
submission too large for one transaction is written as several `Part`s under one
random `hold` token: the envelopes of a part that is not `last` are held (a row in
`outbox_hold`) and never `due`; the last part deletes the submission's hold rows in
its own transaction, so every recipient's envelope becomes due at once or none does.
`Discard(hold)` deletes a held submission whose queueing failed, and
`discard_held` at start-up deletes what a crash left held: a message is either
queued for all its recipients or not accepted.

The delivery worker takes `due` entries up to a byte budget, removes an entry once
a relay acknowledged it (`delivered`) or schedules the next try (`retry_later`). An
entry holds only the sealed envelope, its random id and the relay URLs: no address,
no content. Past `delivery_give_up` the worker gives an entry up (`give_up`), and so
does `gateway.undelivered` for a recipient since revoked. An item may carry a
`SentNote`: it becomes a `sent_envelope` row in the same transaction (discarded with
a discarded submission), which `delivered` stamps with the relay that took the
envelope, so that `gateway.undelivered` can ask that relay later what became of it.
The last part may carry `StoredCopy`s, messages sealed for a folder of the sender's
own store (the Sent copy): they are stored in the same transaction, so a submission's
envelopes and its Sent copy commit together, on one fsync. `last_error` is a short
reason from the worker (a status or exception name), trimmed to one line; callers
must not put content or addresses in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import nacl.utils
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import col

from gateway.store import header_cache
from gateway.store.db import (
    DuplicateEnvelope,
    InvalidValue,
    StorageFull,
    StoreError,
    is_storage_full,
    reading,
    relays_from_json,
    relays_to_json,
    utc,
    utc_now,
    writing,
)
from gateway.store.driver_sql import (
    DriverRow,
    DriverSql,
    driver_blob,
    driver_datetime,
    insert_sql,
)
from gateway.store.folder_rows import PreparedMessage, ensure_folder, store_prepared_many
from gateway.store.models import OutboxHold, OutboxItem, SentEnvelope

MAX_ERROR_LEN = 200
HOLD_LEN = 16


@dataclass(frozen=True)
class SentNote:
    """What the sender's gateway keeps of one envelope for a notice: `sealed` is opaque
    here (recipient and subject sealed under the sender's key); `account` its address."""

    account: str
    sealed: bytes


# (envelope id, sealed envelope, relays[, note for the sender])
Item = tuple[bytes, bytes, Sequence[str]] | tuple[bytes, bytes, Sequence[str], SentNote]


@dataclass(frozen=True)
class StoredCopy:
    """A message for `folder` of account `account_id` (created if missing, with
    `special_use`), sealed already by `gateway.store.folder_rows.prepare_message`;
    `storage_key` (the account's, in memory only) seals the folder's header cache."""

    account_id: int
    folder: str
    special_use: str | None
    prepared: PreparedMessage
    flags: frozenset[str]
    internal_date: datetime
    storage_key: bytes = field(repr=False)


@dataclass(frozen=True)
class Part:
    """Envelopes of one submission; held until the part with `last` of its `hold` commits.

    `earlier` is how many envelopes the submission's earlier parts hold: the last part
    commits only if all of them are still there (`HeldPartsMissing` otherwise). `copies`
    (of the last part) are stored with it.
    """

    hold: bytes
    items: Sequence[Item]
    last: bool = True
    earlier: int = 0
    copies: Sequence[StoredCopy] = ()


@dataclass(frozen=True)
class Discard:
    """Delete the envelopes still held under `hold` (a submission that was not accepted)."""

    hold: bytes


OutboxWrite = Part | Discard


class HeldPartsMissing(StoreError):
    def __init__(self) -> None:
        super().__init__("earlier parts of this submission are no longer held")


def new_hold() -> bytes:
    return nacl.utils.random(HOLD_LEN)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    envelope_id: bytes
    envelope: bytes
    relays: tuple[str, ...]
    attempts: int
    created_at: datetime  # when the submission was accepted


# The statements of every submission's commit, as plain SQL (`gateway.store.driver_sql`).
_INSERT = insert_sql("outbox_item", (
    "envelope_id", "envelope", "relays", "attempts", "next_attempt", "last_error", "created_at",
))
_INSERT_HOLD = insert_sql("outbox_hold", ("envelope_id", "hold"))
_RELEASE = DriverSql("DELETE FROM outbox_hold WHERE hold = ?")
_ENVELOPE_ID, _CREATED_AT = 0, 6  # in a row of _INSERT
_COUNT_HELD = select(func.count()).where(col(OutboxHold.hold) == bindparam("hold"))
_HELD = select(col(OutboxHold.envelope_id))
_DISCARD = delete(OutboxItem).where(
    col(OutboxItem.envelope_id).in_(_HELD.where(col(OutboxHold.hold) == bindparam("hold")))
)
_DISCARD_ALL = delete(OutboxItem).where(col(OutboxItem.envelope_id).in_(_HELD))
_DISCARD_SENT = delete(SentEnvelope).where(
    col(SentEnvelope.envelope_id).in_(_HELD.where(col(OutboxHold.hold) == bindparam("hold")))
)
_DISCARD_ALL_SENT = delete(SentEnvelope).where(col(SentEnvelope.envelope_id).in_(_HELD))
_INSERT_SENT = insert_sql("sent_envelope", (
    "envelope_id", "account_id", "note", "relay", "next_check", "outcome", "outcome_hour",
    "created_at",
))
_ACCOUNT_ID = DriverSql("SELECT id FROM account WHERE address = ?")
_MARK_DEPOSITED = (
    update(SentEnvelope)
    .where(
        col(SentEnvelope.envelope_id)
        == select(col(OutboxItem.envelope_id))
        .where(col(OutboxItem.id) == bindparam("entry_id"))
        .scalar_subquery()
    )
    .values(relay=bindparam("taken_by"), next_check=bindparam("check_at"))
)
# Due entries are chosen on metadata first: length() of a column reads no blob (on
# SQLite, nor its overflow pages), then only the chosen rows' envelopes are read.
_SCHEDULE = (col(OutboxItem.next_attempt), col(OutboxItem.id))
_SELECT_DUE_SIZES = (
    select(col(OutboxItem.id), func.length(col(OutboxItem.envelope)))
    .where(col(OutboxItem.next_attempt) <= bindparam("now"))
    .where(~exists().where(col(OutboxHold.envelope_id) == col(OutboxItem.envelope_id)))
    .order_by(*_SCHEDULE)
)
_SELECT_ENTRIES = (
    select(
        col(OutboxItem.id),
        col(OutboxItem.envelope_id),
        col(OutboxItem.envelope),
        col(OutboxItem.relays),
        col(OutboxItem.attempts),
        col(OutboxItem.created_at),
    )
    .where(col(OutboxItem.id).in_(bindparam("ids", expanding=True)))
    .order_by(*_SCHEDULE)
)
_IN_CHUNK = 500  # bound parameters per IN (...) list
_FORGET_NOTE = delete(SentEnvelope).where(
    col(SentEnvelope.envelope_id)
    == select(col(OutboxItem.envelope_id))
    .where(col(OutboxItem.id) == bindparam("entry_id"))
    .scalar_subquery()
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
_GAVE_UP = (
    update(SentEnvelope)
    .where(col(SentEnvelope.envelope_id) == bindparam("gone_id"))
    .values(outcome=bindparam("gone_outcome"), outcome_hour=bindparam("gone_hour"))
)
_DELETE_ENVELOPE = delete(OutboxItem).where(col(OutboxItem.envelope_id) == bindparam("gone_id"))


def _one_line(error: str) -> str:
    return " ".join(error.split())[:MAX_ERROR_LEN]


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, items: Sequence[Item]) -> None:
        """Keep (envelope_id, envelope, relays) items; all or none, due and durable on return.

        Raises `DuplicateEnvelope` (nothing kept) if an envelope id is already queued,
        `InvalidValue` for an empty envelope id or relay list.
        """
        self.write([Part(new_hold(), items)])

    def write(self, writes: Sequence[OutboxWrite]) -> None:
        """Apply parts and discards in order, in one transaction; durable on return.

        Raises like `put`, `HeldPartsMissing`, or `StorageFull` when the disk has no room;
        then nothing of any of `writes` is kept, and what was committed before is intact.
        """
        dialect = self._engine.dialect
        now, blob = driver_datetime(dialect, utc_now()), driver_blob(dialect)
        # Last parts with no earlier part to check whose hold nothing else in `writes`
        # names (a whole submission, as a rule) go in together, a few statements for all
        # of them, after the other steps: those touch none of their rows.
        holds = Counter(w.hold for w in writes)
        whole = [
            w for w in writes
            if isinstance(w, Part) and w.last and not w.earlier and holds[w.hold] == 1
        ]
        in_whole = {id(part) for part in whole}
        steps: list[tuple[OutboxWrite, list[DriverRow]]] = [
            (w, _rows(w.items, now, blob) if isinstance(w, Part) else [])
            for w in writes if id(w) not in in_whole
        ]
        whole_items = [item for part in whole for item in part.items]
        whole_rows = _rows(whole_items, now, blob)
        try:
            with writing(self._engine) as connection:
                for step, rows in steps:
                    _apply(connection, step, rows)
                if whole_rows:
                    _INSERT.execute(connection, whole_rows)
                    _insert_sent(connection, whole_items, whole_rows)
                if whole:
                    _RELEASE.execute(connection, [(part.hold,) for part in whole])
                _store_copies(connection, [copy for part in whole for copy in part.copies])
        except IntegrityError:
            raise DuplicateEnvelope() from None
        except (OperationalError, OSError) as e:
            if is_storage_full(e):
                raise StorageFull() from e
            raise

    def discard_held(self) -> int:
        """Delete every held envelope (a crash cut its submission short); returns how many."""
        with writing(self._engine) as connection:
            connection.execute(_DISCARD_ALL_SENT)
            return connection.execute(_DISCARD_ALL).rowcount

    def due(self, now: datetime, max_bytes: int) -> list[OutboxEntry]:
        """Entries whose next attempt is at or before `now`, oldest schedule first.

        As many as fit in `max_bytes` of envelopes, and at least one: an envelope
        larger than the budget comes alone.
        """
        chosen: list[int] = []
        total = 0
        with reading(self._engine) as connection:
            for entry_id, size in connection.execute(_SELECT_DUE_SIZES, {"now": utc(now)}):
                if chosen and total + size > max_bytes:
                    break
                chosen.append(entry_id)
                total += size
            rows = [
                row
                for start in range(0, len(chosen), _IN_CHUNK)
                for row in connection.execute(
                    _SELECT_ENTRIES, {"ids": chosen[start : start + _IN_CHUNK]}
                )
            ]
        return [
            OutboxEntry(
                id=entry_id,
                envelope_id=envelope_id,
                envelope=envelope,
                relays=relays_from_json(relays),
                attempts=attempts,
                created_at=created_at,
            )
            for entry_id, envelope_id, envelope, relays, attempts, created_at in rows
            if entry_id is not None
        ]

    def delivered(
        self, *entry_ids: int, relays: Mapping[int, str] | None = None,
        check_at: datetime | None = None, forget: Sequence[int] = (),
    ) -> None:
        """Relays acknowledged these envelopes: forget them, in one transaction.

        `relays` says which relay took which entry: its sent note (if any) records it and
        is first checked at `check_at`. The sent notes of the entries in `forget` (taken
        by a depositor that has no status to ask, the smarthost) are deleted. An id
        already gone has no effect.
        """
        if not entry_ids:
            return
        marks = [
            {"entry_id": entry_id, "taken_by": url, "check_at": utc(check_at or utc_now())}
            for entry_id, url in (relays or {}).items()
        ]
        with writing(self._engine) as connection:
            if marks:
                connection.execute(_MARK_DEPOSITED, marks)
            if forget:
                connection.execute(_FORGET_NOTE, [{"entry_id": entry_id} for entry_id in forget])
            connection.execute(_DELETE, [{"entry_id": entry_id} for entry_id in entry_ids])

    def retry_later(self, entry_id: int, at: datetime, error: str) -> None:
        """Count a failed attempt and schedule the next one (no effect if the entry is gone)."""
        when = utc(at)
        with writing(self._engine) as connection:
            connection.execute(
                _RETRY, {"entry_id": entry_id, "at": when, "error": _one_line(error)}
            )

    def give_up(self, envelope_id: bytes, outcome: str, at: datetime) -> bool:
        """Stop delivering an envelope: it leaves the outbox, and its sent note (if any)
        waits with `outcome` (`GAVE_UP_OUTCOMES`) for the sender's notice, in one
        transaction. False if the envelope was no longer queued (nothing changes)."""
        with writing(self._engine) as connection:
            if connection.execute(_DELETE_ENVELOPE, {"gone_id": envelope_id}).rowcount == 0:
                return False
            connection.execute(_GAVE_UP, {
                "gone_id": envelope_id, "gone_outcome": outcome,
                "gone_hour": int(utc(at).timestamp()),
            })
        return True

    def pending_count(self) -> int:
        with reading(self._engine) as connection:
            return connection.execute(_COUNT).scalar_one()


def _rows(
    items: Sequence[Item], now: object, blob: Callable[[bytes | bytearray], object]
) -> list[DriverRow]:
    """The `_INSERT` rows of `items`, queued `now` (as `driver_datetime` gives it), their
    envelopes passed through `blob` (`driver_blob`)."""
    rows: list[DriverRow] = []
    texts: dict[tuple[str, ...], str] = {}  # the recipients of a batch share their relays
    for envelope_id, envelope, relays, *_ in items:
        if not envelope_id:
            raise InvalidValue("envelope id is empty")
        relays_json = texts.get(relays) if type(relays) is tuple else None
        if relays_json is None:
            relays_json = relays_to_json(relays)
            if relays_json == "[]":
                raise InvalidValue("an envelope needs at least one relay")
            if type(relays) is tuple:
                texts[relays] = relays_json
        rows.append((envelope_id, blob(envelope), relays_json, 0, now, None, now))
    return rows


def _apply(connection: Connection, step: OutboxWrite, rows: list[DriverRow]) -> None:
    if isinstance(step, Discard):
        connection.execute(_DISCARD_SENT, {"hold": step.hold})
        connection.execute(_DISCARD, {"hold": step.hold})
        _RELEASE.execute(connection, (step.hold,))
        return
    if step.last and step.earlier:
        held = connection.execute(_COUNT_HELD, {"hold": step.hold}).scalar_one()
        if held != step.earlier:  # discarded meanwhile (another process's start-up)
            raise HeldPartsMissing()
    if rows:
        _INSERT.execute(connection, rows)
        _insert_sent(connection, step.items, rows)
    if step.last:
        _RELEASE.execute(connection, (step.hold,))
        _store_copies(connection, step.copies)
    elif rows:
        _INSERT_HOLD.execute(connection, [(row[_ENVELOPE_ID], step.hold) for row in rows])


def _store_copies(connection: Connection, copies: Sequence[StoredCopy]) -> None:
    """Store `copies` in their folders, in order: two statements per folder, and the
    folders' header caches extended."""
    folders: dict[tuple[int, str, str | None], list[StoredCopy]] = {}
    for copy in copies:
        folders.setdefault((copy.account_id, copy.folder, copy.special_use), []).append(copy)
    for (account_id, folder, special_use), stored in folders.items():
        folder_id, _ = ensure_folder(connection, account_id, folder, special_use)
        store_prepared_many(
            connection, folder_id, [(c.prepared, c.internal_date, c.flags) for c in stored]
        )
        # The key of the account, in memory only, seals the folder's header cache.
        header_cache.extend(connection, stored[0].storage_key, account_id, folder_id)


def _insert_sent(connection: Connection, items: Sequence[Item], rows: list[DriverRow]) -> None:
    accounts: dict[str, int | None] = {}
    sent: list[DriverRow] = []
    for item, row in zip(items, rows, strict=True):
        if len(item) < 4:
            continue
        note = item[3]
        if note.account not in accounts:
            accounts[note.account] = _ACCOUNT_ID.execute(connection, (note.account,)).scalar()
        account_id = accounts[note.account]
        if account_id is None:
            raise InvalidValue("a sent note names no account of this gateway")
        created = row[_CREATED_AT]
        sent.append(
            (row[_ENVELOPE_ID], account_id, note.sealed, None, created, None, None, created)
        )
    if sent:
        _INSERT_SENT.execute(connection, sent)
