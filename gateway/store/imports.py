"""Imported mail waiting to be filed, its dedup records and the migration checkpoints.

The migration tool (`gateway.migrate`) writes here without the account's password:
each message arrives already sealed to the account's public encryption key, with
its target folder, flags, internal date, size and a keyed digest. The gateway files
pending messages into the mailbox store once the account is unlocked (`file`): the
message row, a created folder and the import's "filed" state commit together, so a
crash never files a message twice nor loses one.

The digest is keyed with the account's random `MigrationKey`, kept in this store:
it tells equal messages apart for dedup and verification, and cannot be matched
against a hash computed elsewhere, nor between accounts. Whoever holds the whole
store can still test a guessed message against it (`forget` drops the key and the
digests once a migration is done).

A batch of imports and its source checkpoint commit in one transaction, so a
checkpoint never claims a message that is not stored. Every write is a short
`writing` transaction: the tool and a serving gateway share the database safely.
This module never sees a message in clear and never logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nacl.utils
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlmodel import col

from gateway.store.accounts import find_account
from gateway.store.db import (
    SQLITE_BUSY_TIMEOUT_S,
    SQLITE_PRAGMAS,
    UnknownAccount,
    reading,
    utc,
    writing,
)
from gateway.store.folder_rows import PreparedMessage, ensure_folder, store_prepared
from gateway.store.models import (
    ImportedMessage,
    MigrationCheckpoint,
    MigrationKey,
    utc_offset_minutes,
    zoned,
)

PENDING = "pending"
FILED = "filed"
REFUSED = "refused"
MIGRATION_KEY_LEN = 32


@dataclass(frozen=True)
class ImportTarget:
    """What the migration tool needs of an account: no secret that opens mail."""

    account_id: int
    encryption_key: bytes  # public X25519: imports are sealed to it
    digest_key: bytes  # the account's MigrationKey


@dataclass(frozen=True)
class NewImport:
    folder: str
    special_use: str | None
    digest: bytes
    flags: tuple[str, ...]
    internal_date: datetime
    size: int
    sealed: bytes


@dataclass(frozen=True)
class PendingImport:
    id: int
    folder: str
    special_use: str | None
    digest: bytes
    flags: tuple[str, ...]
    internal_date: datetime
    size: int
    sealed: bytes


@dataclass(frozen=True)
class Checkpoint:
    uid_validity: int
    last_uid: int


@dataclass(frozen=True)
class SqliteImportSql:
    """`ImportStore.add` as plain SQL, for a writer that runs without SQLAlchemy (the
    migration's child process, `gateway.migrate.writer`): the SQLite file, the
    connection's pragmas, an INSERT that skips a digest already in its folder (the
    table's unique key) and the checkpoint's upsert, each with its parameters' names in
    order. Each batch and its checkpoint must commit in one `BEGIN IMMEDIATE`
    transaction. Dates are passed as `date_param` makes them."""

    database: str
    pragmas: tuple[str, ...]
    busy_timeout: float
    insert: str
    insert_params: tuple[str, ...]
    checkpoint: str
    checkpoint_params: tuple[str, ...]
    pending: str = PENDING


_INSERT_COLUMNS = ("account_id", "folder", "special_use", "digest", "flags", "internal_date",
                   "internal_offset", "size", "state", "sealed")
_CHECKPOINT_COLUMNS = ("account_id", "source", "folder", "uid_validity", "last_uid")


_IMPORT = col(ImportedMessage.account_id) == bindparam("account_id")
_SELECT_DIGESTS = select(col(ImportedMessage.digest)).where(
    _IMPORT, col(ImportedMessage.folder) == bindparam("folder")
)
_SELECT_GIVEN_DIGESTS = _SELECT_DIGESTS.where(
    col(ImportedMessage.digest).in_(bindparam("digests", expanding=True))
)
_SELECT_PENDING_SIZES = (
    select(col(ImportedMessage.id), col(ImportedMessage.size))
    .where(_IMPORT, col(ImportedMessage.state) == PENDING)
    .order_by(col(ImportedMessage.id))
    .limit(bindparam("limit"))
)
_SELECT_PENDING = (
    select(
        col(ImportedMessage.id),
        col(ImportedMessage.folder),
        col(ImportedMessage.special_use),
        col(ImportedMessage.digest),
        col(ImportedMessage.flags),
        col(ImportedMessage.internal_date),
        col(ImportedMessage.internal_offset),
        col(ImportedMessage.size),
        col(ImportedMessage.sealed),
    )
    .where(col(ImportedMessage.id).in_(bindparam("ids", expanding=True)))
    .order_by(col(ImportedMessage.id))
)


def _checkpoint_key(account_id: int, source: bytes, source_folder: str) -> tuple[Any, ...]:
    return (
        col(MigrationCheckpoint.account_id) == account_id,
        col(MigrationCheckpoint.source) == source,
        col(MigrationCheckpoint.folder) == source_folder,
    )


class ImportStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def target(self, address: str, *, create: bool = True) -> ImportTarget:
        """The account's public encryption key and migration key, created on first use
        (without `create`, a missing key is replaced by a random one not kept: a dry run
        writes nothing)."""
        with writing(self._engine) as connection:
            account = find_account(connection, address)
            if account is None:
                raise UnknownAccount()
            key = connection.execute(
                select(col(MigrationKey.key)).where(col(MigrationKey.account_id) == account.id)
            ).scalar_one_or_none()
            if key is None:
                key = nacl.utils.random(MIGRATION_KEY_LEN)
                if create:
                    connection.execute(
                        insert(MigrationKey), {"account_id": account.id, "key": key}
                    )
        return ImportTarget(account.id, account.public.encryption_key, key)

    def sqlite_sql(self) -> SqliteImportSql | None:
        """What `SqliteImportSql` says, for a store on SQLite (None on another database)."""
        if self._engine.dialect.name != "sqlite" or not self._engine.url.database:
            return None
        dialect = self._engine.dialect
        imports = ImportedMessage.__table__  # type: ignore[attr-defined]  # sqlmodel's table
        added = sqlite.insert(imports).on_conflict_do_nothing(
            index_elements=["account_id", "folder", "digest"]
        ).compile(dialect=dialect, column_keys=list(_INSERT_COLUMNS))
        checkpoints = MigrationCheckpoint.__table__  # type: ignore[attr-defined]
        upsert = sqlite.insert(checkpoints)
        moved = upsert.on_conflict_do_update(
            index_elements=["account_id", "source", "folder"],
            set_={"uid_validity": upsert.excluded.uid_validity,
                  "last_uid": upsert.excluded.last_uid},
        ).compile(dialect=dialect, column_keys=list(_CHECKPOINT_COLUMNS))
        return SqliteImportSql(
            self._engine.url.database, SQLITE_PRAGMAS, SQLITE_BUSY_TIMEOUT_S,
            added.string, tuple(added.positiontup or ()),
            moved.string, tuple(moved.positiontup or ()),
        )

    def date_param(self) -> Callable[[datetime], object]:
        """How `internal_date` goes into a statement of `sqlite_sql` (the column type's
        own conversion)."""
        imports = ImportedMessage.__table__  # type: ignore[attr-defined]
        convert = imports.c.internal_date.type.bind_processor(self._engine.dialect)
        assert convert is not None  # noqa: S101 - a TypeDecorator always converts
        return convert  # type: ignore[no-any-return]

    def digests(self, account_id: int, folder: str) -> set[bytes]:
        """The digests imported into a target folder so far (pending, filed or refused)."""
        with reading(self._engine) as connection:
            rows = connection.execute(_SELECT_DIGESTS, {"account_id": account_id, "folder": folder})
            return {digest for (digest,) in rows}

    def checkpoint(self, account_id: int, source: bytes, source_folder: str) -> Checkpoint | None:
        with reading(self._engine) as connection:
            row = connection.execute(
                select(
                    col(MigrationCheckpoint.uid_validity), col(MigrationCheckpoint.last_uid)
                ).where(*_checkpoint_key(account_id, source, source_folder))
            ).first()
        return None if row is None else Checkpoint(row[0], row[1])

    def add(
        self,
        account_id: int,
        imports: Sequence[NewImport],
        checkpoint: tuple[bytes, str, Checkpoint] | None = None,
    ) -> int:
        """Store new imports (a digest already in its folder is skipped) and move the
        checkpoint (source, source folder, position), all in one transaction; the count
        stored."""
        rows: list[dict[str, object]] = []
        by_folder: dict[str, list[NewImport]] = {}
        for item in imports:
            by_folder.setdefault(item.folder, []).append(item)
        with writing(self._engine) as connection:
            for folder, items in by_folder.items():
                # Only this batch's digests: the whole folder's would grow with it.
                found = connection.execute(_SELECT_GIVEN_DIGESTS, {
                    "account_id": account_id, "folder": folder,
                    "digests": [item.digest for item in items]})
                seen = {digest for (digest,) in found}
                for item in items:
                    if item.digest in seen:
                        continue
                    seen.add(item.digest)
                    rows.append({
                        "account_id": account_id,
                        "folder": item.folder,
                        "special_use": item.special_use,
                        "digest": item.digest,
                        "flags": " ".join(item.flags),
                        "internal_date": utc(item.internal_date),
                        "internal_offset": utc_offset_minutes(item.internal_date),
                        "size": item.size,
                        "state": PENDING,
                        "sealed": item.sealed,
                    })
            if rows:  # one executemany: a row at a time costs more than the sealing
                connection.execute(insert(ImportedMessage), rows)
            if checkpoint is not None:
                source, source_folder, position = checkpoint
                _set_checkpoint(connection, account_id, source, source_folder, position)
        return len(rows)

    def set_checkpoint(
        self, account_id: int, source: bytes, source_folder: str, position: Checkpoint
    ) -> None:
        with writing(self._engine) as connection:
            _set_checkpoint(connection, account_id, source, source_folder, position)

    def pending_accounts(self, account_ids: Iterable[int]) -> set[int]:
        """Which of these accounts have imports waiting to be filed."""
        ids = list(account_ids)
        if not ids:
            return set()
        with reading(self._engine) as connection:
            rows = connection.execute(
                select(col(ImportedMessage.account_id))
                .where(
                    col(ImportedMessage.account_id).in_(ids),
                    col(ImportedMessage.state) == PENDING,
                )
                .distinct()
            )
            return {account_id for (account_id,) in rows}

    def pending(self, account_id: int, limit: int, max_bytes: int) -> list[PendingImport]:
        """Pending imports of an account, oldest first: up to `limit` of them and
        `max_bytes` of messages (at least one)."""
        with reading(self._engine) as connection:
            sizes = connection.execute(
                _SELECT_PENDING_SIZES, {"account_id": account_id, "limit": limit}
            ).all()
            ids: list[int] = []
            total = 0
            for row_id, size in sizes:
                if ids and total + size > max_bytes:
                    break
                if row_id is not None:
                    ids.append(row_id)
                    total += size
            if not ids:
                return []
            rows = connection.execute(_SELECT_PENDING, {"ids": ids})
            return [
                PendingImport(row_id, folder, special, digest, tuple(flags.split()),
                              zoned(date, offset), size, sealed)
                for row_id, folder, special, digest, flags, date, offset, size, sealed in rows
                if row_id is not None and sealed is not None
            ]

    def file(
        self,
        account_id: int,
        filed: Sequence[tuple[PendingImport, PreparedMessage]],
        refused: Sequence[int] = (),
    ) -> int:
        """File prepared messages into their folders (created if missing) and mark them
        filed; mark `refused` import ids refused. One transaction; the count filed (an
        import filed meanwhile by another process is skipped)."""
        count = 0
        with writing(self._engine) as connection:
            for item, prepared in filed:
                taken = connection.execute(
                    update(ImportedMessage)
                    .where(
                        col(ImportedMessage.id) == item.id, col(ImportedMessage.state) == PENDING
                    )
                    .values(state=FILED, sealed=None)
                )
                if taken.rowcount != 1:
                    continue
                folder_id, _ = ensure_folder(connection, account_id, item.folder, item.special_use)
                store_prepared(
                    connection, folder_id, prepared, internal_date=item.internal_date,
                    flags=item.flags,
                )
                count += 1
            if refused:
                connection.execute(
                    update(ImportedMessage)
                    .where(col(ImportedMessage.id).in_(list(refused)),
                           col(ImportedMessage.state) == PENDING)
                    .values(state=REFUSED, sealed=None)
                )
        return count

    def counts(self, account_id: int) -> dict[str, int]:
        """Imports of an account by state."""
        with reading(self._engine) as connection:
            rows = connection.execute(
                select(col(ImportedMessage.state), func.count())
                .where(col(ImportedMessage.account_id) == account_id)
                .group_by(col(ImportedMessage.state))
            )
            return {state: count for state, count in rows}

    def forget(self, account_id: int) -> None:
        """Drop the account's migration key, dedup records and checkpoints (after the
        migration: no digest is left that a guess could be tested against)."""
        with writing(self._engine) as connection:
            for table in (MigrationCheckpoint, MigrationKey):
                connection.execute(delete(table).where(col(table.account_id) == account_id))
            connection.execute(
                delete(ImportedMessage).where(
                    col(ImportedMessage.account_id) == account_id,
                    col(ImportedMessage.state) != PENDING,
                )
            )


def _set_checkpoint(
    connection: Connection, account_id: int, source: bytes, source_folder: str,
    position: Checkpoint,
) -> None:
    values = {"uid_validity": position.uid_validity, "last_uid": position.last_uid}
    updated = connection.execute(
        update(MigrationCheckpoint)
        .where(*_checkpoint_key(account_id, source, source_folder))
        .values(**values)
    )
    if updated.rowcount == 0:
        connection.execute(
            insert(MigrationCheckpoint),
            {"account_id": account_id, "source": source, "folder": source_folder, **values},
        )
