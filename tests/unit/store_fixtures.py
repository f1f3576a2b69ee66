"""Fixtures for the store tests (tests/unit/test_store_*.py).

Test modules load them with `pytest_plugins = ["tests.unit.store_fixtures"]`. Every store test
runs on a real SQLite file in tmp_path, and again on PostgreSQL (marked
`integration`, one fresh schema per test) when a server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from gateway.store.db import open_engine

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    schema = "sg_test_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError:
        admin.dispose()
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], Engine]]:
    """Opens engines on the test's database (a second call = reopening it); disposes them."""
    engines: list[Engine] = []

    def _open() -> Engine:
        engines.append(open_engine(store_url))
        return engines[-1]

    yield _open
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store_engine(open_store: Callable[[], Engine]) -> Engine:
    return open_store()

