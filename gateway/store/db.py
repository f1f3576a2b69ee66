"""The store's database: opening the engine, short transactions, the store's errors.

`open_engine` accepts a SQLite file (the embedded default) or PostgreSQL (the
scale-out path); every table is portable SQL and the same tests run on both.
On SQLite each connection uses WAL with `synchronous=FULL`, so a committed
transaction is on disk (fsynced) before `commit` returns: the outbox depends on it
for "nothing acknowledged with 250 is lost". Transactions that write begin with
`BEGIN IMMEDIATE` (`writing`), so a read followed by a write in one
transaction never fails with a stale snapshot; reads (`reading`) begin
deferred and never block writers. The repositories use SQLAlchemy Core statements
over the SQLModel tables (the ORM unit of work costs more than the work here); the
statements of every submission's commit (the outbox's rows, filing a message, the
header cache's check) are plain SQL run by the driver (`gateway.store.driver_sql`).

Errors raised by the store (the IMAP-facing parts also raise `MailboxNotFound` and
`AuthenticationFailed` from `gateway.imap.backend`, which the IMAP layer renders):

    StoreError
    ├── InvalidValue        an argument the store cannot keep (also a ValueError):
    │                       malformed address, relay list, flag, naive datetime
    ├── AccountExists       `AccountStore.add` for an address already present
    ├── UnknownAccount      no account has that address
    ├── KeyMismatch         the keys given do not belong to that account
    ├── DuplicateEnvelope   the outbox already holds that envelope id
    ├── HeldPartsMissing    (outbox) a submission's earlier parts were discarded
    ├── StorageFull         (outbox) no room on the disk for the write; nothing kept
    └── SessionClosed       a mail session was used after `close`

Error messages never carry addresses, message content or key material. This module
never logs SQL parameters (no `echo`).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.store.models import StoreTable

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON")
_WRITE_OPTION = "sealgate_write"


class StoreError(Exception):
    """Root of the errors the gateway store raises."""


class InvalidValue(StoreError, ValueError):
    """An argument the store cannot keep (the message says which kind, never its value)."""


class AccountExists(StoreError):
    def __init__(self) -> None:
        super().__init__("an account with this address exists")


class UnknownAccount(StoreError):
    def __init__(self) -> None:
        super().__init__("no such account")


class KeyMismatch(StoreError):
    def __init__(self) -> None:
        super().__init__("these keys do not belong to the account")


class DuplicateEnvelope(StoreError):
    def __init__(self) -> None:
        super().__init__("the outbox already holds this envelope id")


class StorageFull(StoreError):
    """The disk (or the database server's) had no room for a write; none of it was kept."""

    def __init__(self) -> None:
        super().__init__("no room left to write the store")


def is_storage_full(error: BaseException) -> bool:
    """Whether `error` (a driver error, possibly wrapped by SQLAlchemy) means a full disk:
    SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100), or ENOSPC / EDQUOT."""
    cause = getattr(error, "orig", None) or error
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    name = getattr(cause, "sqlite_errorname", None)
    return (isinstance(name, str) and name.startswith("SQLITE_FULL")) or (
        getattr(cause, "sqlstate", None) == "53100"
    )


class SessionClosed(StoreError):
    def __init__(self) -> None:
        super().__init__("mail session is closed")


def open_engine(url: str) -> Engine:
    """Open (and create if needed) the store at `url`: `sqlite:///PATH` or `postgresql+psycopg://…`.
    A store made by an earlier version is brought up to date: missing tables and indexes
    are created, and the columns of `ADDED_COLUMNS` added."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
            raise InvalidValue("the store needs a SQLite file, not an in-memory database")
        _create_private_file(Path(database))
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql":
        engine = create_engine(parsed, pool_pre_ping=True)
    else:
        raise InvalidValue(f"unsupported database backend: {backend}")
    StoreTable.metadata.create_all(engine)
    _add_missing_columns(engine)
    for table in StoreTable.metadata.sorted_tables:  # an index added after its table existed
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    return engine


# Columns added to a table after stores were made with it: (table, column, DDL type and
# default). `create_all` makes new tables whole; an older table gets these by ALTER TABLE.
ADDED_COLUMNS = (
    ("message", "internal_offset", "INTEGER NOT NULL DEFAULT 0"),
    ("imported_message", "internal_offset", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(engine: Engine) -> None:
    tables = {table for table, _, _ in ADDED_COLUMNS}
    with engine.connect() as connection:
        present = {table: _columns(connection, table) for table in tables}
    missing = [added for added in ADDED_COLUMNS if added[1] not in present[added[0]]]
    if not missing:
        return
    # A gateway starting beside this one may add them first: PostgreSQL is told to skip a
    # column that exists; SQLite (which lacks that clause) looks again under its write lock.
    postgres = engine.dialect.name == "postgresql"
    with writing(engine) as connection:
        for table, column, ddl in missing:
            if not postgres and column in _columns(connection, table):
                continue
            guard = "IF NOT EXISTS " if postgres else ""
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {guard}{column} {ddl}")


def _columns(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite copies the mode to -wal/-shm)."""
    if path.exists():
        return
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # The driver must not open transactions on its own: `_sqlite_begin` emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(_WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (one consistent snapshot); rolled back on exit."""
    with engine.connect() as connection:
        yield connection


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction, committed (and on SQLite fsynced) when the block ends without error."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValue("datetime must be timezone-aware")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def relays_to_json(relays: Sequence[str]) -> str:
    """A relay list (URLs, priority order) as the JSON text its columns hold."""
    if isinstance(relays, str | bytes):
        raise InvalidValue("relays must be a list of URLs, not one string")
    urls = list(relays)
    for url in urls:
        if not isinstance(url, str) or not url or url != url.strip():
            raise InvalidValue("each relay must be a non-empty URL without surrounding spaces")
    if len(set(urls)) != len(urls):
        raise InvalidValue("relay list repeats a URL")
    return json.dumps(urls)


def relays_from_json(text: str) -> tuple[str, ...]:
    urls = json.loads(text)
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise StoreError("stored relay list is malformed")
    return tuple(urls)
