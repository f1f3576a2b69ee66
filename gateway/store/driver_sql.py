"""Statements of the store's hottest writes as plain SQL, run by the driver itself.

A Core statement run through `Connection.execute` costs tens of microseconds, and a few
more for every row and bound value (the compiled cache's key, parameter construction,
bind processors, the result's set-up): with the outbox's commits several to a submitted
message, that was a good share of the gateway's CPU. A `DriverSql` holds its SQL written
once, with `?` placeholders (turned into `%s` for psycopg), and runs it with
`Connection.exec_driver_sql`, which still raises what `execute` raises (SQLAlchemy's
`IntegrityError`, `OperationalError`, ... with the driver's error as `orig`) and keeps
the connection's transaction and events. `rows` returns a query's rows as the driver's
tuples, for reads of thousands of rows where a `Row` each is most of the cost.

Its rows are tuples of values the driver takes as they are (bytes, bytearray, str, int,
None); a datetime for a `UTCDateTime` column goes through `driver_datetime` first, once
per value however many rows share it, and a blob that may be large through
`driver_blob` (psycopg copies a bare one into its own buffer first). The SQL is
portable: every table and column name is one neither backend reserves, and an INSERT's
are checked against the store's tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Dialect, LargeBinary
from sqlalchemy.exc import DBAPIError

from gateway.store.models import StoreTable, UTCDateTime

DriverRow = tuple[object, ...]


class DriverSql:
    def __init__(self, sql: str) -> None:
        if "%" in sql:  # psycopg would read it as a placeholder
            raise ValueError("driver SQL must not contain '%'")
        self._qmark = sql
        self._format = sql.replace("?", "%s")

    def sql(self, dialect: Dialect) -> str:
        return self._qmark if dialect.paramstyle == "qmark" else self._format

    def execute(
        self, connection: Connection, rows: DriverRow | Sequence[DriverRow]
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run it with one row of parameters (a tuple) or for each of a list of rows."""
        return connection.exec_driver_sql(self.sql(connection.dialect), rows)

    def rows(self, connection: Connection, params: DriverRow) -> list[Any]:
        """Run it with one row of parameters; every row as the driver's own tuple, taken
        from its cursor at once (no `Row` per row). What the driver raises while fetching
        is raised as SQLAlchemy's error, as from `execute`."""
        sql = self.sql(connection.dialect)
        result = connection.exec_driver_sql(sql, params)
        dbapi_error = connection.dialect.loaded_dbapi.Error
        try:
            return cast(list[Any], result.cursor.fetchall())
        except dbapi_error as error:
            raise DBAPIError.instance(sql, params, error, dbapi_error) from error
        finally:
            result.close()


def insert_sql(table: str, columns: Sequence[str], *, returning: str | None = None) -> DriverSql:
    """INSERT INTO `table` (`columns`) VALUES (?, ...) [RETURNING `returning`]."""
    known = StoreTable.metadata.tables[table].columns
    for name in (*columns, *([returning] if returning else [])):
        if name not in known:
            raise ValueError(f"table {table} has no column {name}")
    marks = ", ".join("?" * len(columns))
    tail = f" RETURNING {returning}" if returning else ""
    # Names checked against the store's own tables above: no value is ever spliced in.
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){tail}"  # noqa: S608
    return DriverSql(sql)


def driver_datetime(dialect: Dialect, moment: datetime) -> object:
    """`moment` (timezone-aware) as the driver takes it for a `UTCDateTime` column:
    naive UTC, and on SQLite the text SQLAlchemy stores and reads back."""
    return _datetime_processor(dialect)(moment)


def driver_blob(dialect: Dialect) -> Callable[[bytes | bytearray], object]:
    """How the driver takes a blob without copying it, as SQLAlchemy passes one: on
    PostgreSQL wrapped in psycopg's `Binary` (sent in binary format, from the buffer)."""
    return _blob_processor(dialect)


@functools.lru_cache(maxsize=16)
def _blob_processor(dialect: Dialect) -> Callable[[bytes | bytearray], object]:
    process = LargeBinary().dialect_impl(dialect).bind_processor(dialect)
    return _unchanged if process is None else cast(Callable[[bytes | bytearray], object], process)


def _unchanged(blob: bytes | bytearray) -> object:
    return blob


@functools.lru_cache(maxsize=16)
def _datetime_processor(dialect: Dialect) -> Callable[[datetime], object]:
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    if process is None:  # pragma: no cover - UTCDateTime always converts
        raise TypeError("UTCDateTime has no bind processor")
    return process
