"""Plain driver SQL (`gateway.store.driver_sql`) stores what Core statements store: a
datetime written through `driver_datetime` reads back through the SQLAlchemy columns as
the same moment, a blob through `driver_blob` as the same octets, on SQLite and
PostgreSQL; errors come wrapped as from `Connection.execute`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import col

from gateway.store.db import reading, writing
from gateway.store.driver_sql import DriverSql, driver_blob, driver_datetime, insert_sql
from gateway.store.models import OutboxItem

pytest_plugins = ["tests.unit.store_fixtures"]

_INSERT = insert_sql("outbox_item", (
    "envelope_id", "envelope", "relays", "attempts", "next_attempt", "last_error", "created_at",
))


def test_a_datetime_and_a_blob_read_back_through_the_columns(store_engine: Engine) -> None:
    dialect = store_engine.dialect
    east = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5)))
    now = datetime.now(UTC)
    envelope = bytearray(b"\x00\xff" * 70_000)
    with writing(store_engine) as connection:
        _INSERT.execute(connection, [
            (b"e" * 16, driver_blob(dialect)(envelope), '["r"]', 0,
             driver_datetime(dialect, east), None, driver_datetime(dialect, now)),
            (b"f" * 16, driver_blob(dialect)(b""), '["r"]', 2,
             driver_datetime(dialect, now), "x", driver_datetime(dialect, now)),
        ])
    query = select(
        col(OutboxItem.envelope_id), col(OutboxItem.envelope), col(OutboxItem.attempts),
        col(OutboxItem.next_attempt), col(OutboxItem.created_at),
    ).order_by(col(OutboxItem.envelope_id))
    with reading(store_engine) as connection:
        rows = [tuple(row) for row in connection.execute(query)]
    assert rows == [
        (b"e" * 16, bytes(envelope), 0, east, now),
        (b"f" * 16, b"", 2, now, now),
    ]
    assert rows[0][3].tzinfo is UTC  # the moment, in UTC, as every UTCDateTime reads


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        driver_datetime(sqlite.dialect(), datetime(2030, 1, 1))  # noqa: DTZ001


def test_errors_are_wrapped_as_sqlalchemy_raises_them(store_engine: Engine) -> None:
    now = driver_datetime(store_engine.dialect, datetime.now(UTC))
    row = (b"d" * 16, b"x", '["r"]', 0, now, None, now)
    with pytest.raises(IntegrityError), writing(store_engine) as connection:
        _INSERT.execute(connection, [row, row])
    with reading(store_engine) as connection:
        assert connection.execute(select(col(OutboxItem.id))).all() == []


def test_rows_come_as_the_drivers_tuples_and_errors_while_fetching_are_wrapped(
    store_engine: Engine,
) -> None:
    now = driver_datetime(store_engine.dialect, datetime.now(UTC))
    with writing(store_engine) as connection:
        _INSERT.execute(connection, [
            (bytes([n]) * 16, b"x", '["r"]', n, now, None, now) for n in range(3)
        ])
    select_attempts = DriverSql("SELECT attempts, envelope_id FROM outbox_item ORDER BY attempts")
    with reading(store_engine) as connection:
        assert select_attempts.rows(connection, ()) == [
            (n, bytes([n]) * 16) for n in range(3)
        ]
    # An error the driver raises only once rows are fetched: the third row divides by
    # zero (SQLite steps row by row, so it fails in `fetchall`; PostgreSQL at once).
    if store_engine.dialect.name == "sqlite":
        def check(left: int) -> int:
            return 1 // left

        failing = DriverSql("SELECT check_attempts(2 - attempts) FROM outbox_item")
    else:
        failing = DriverSql("SELECT 1 / (2 - attempts) FROM outbox_item")
    with pytest.raises(DBAPIError), reading(store_engine) as connection:
        if store_engine.dialect.name == "sqlite":
            connection.connection.driver_connection.create_function("check_attempts", 1, check)
        failing.rows(connection, ())


def test_statements_name_only_columns_the_store_has() -> None:
    with pytest.raises(ValueError, match="no column"):
        insert_sql("outbox_item", ("envelope_id", "recipient"))
    with pytest.raises(ValueError, match="'%'"):
        DriverSql("SELECT id FROM account WHERE address LIKE '%@x'")
