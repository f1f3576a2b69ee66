from __future__ import annotations

import stat

import pytest

from gateway.store.db import InvalidValue, open_engine


def test_sqlite_engine_is_durable_and_private(tmp_path):
    path = tmp_path / "gateway.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://db/gateway"])
def test_unusable_database_urls_are_refused(url):
    with pytest.raises(InvalidValue):
        open_engine(url)
