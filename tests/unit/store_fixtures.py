"""Fixtures for the store tests (tests/unit/test_store_*.py).

Test modules load them with `pytest_plugins = ["tests.unit.store_fixtures"]`. Every store test
runs on a real SQLite file in tmp_path, and again on PostgreSQL (marked
`integration`, one fresh schema per test) when a server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.mailbox import MailboxStore
from tests.postgres import fresh_schema
from tests.unit.store_support import ALICE, add_account


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    with fresh_schema("sg_test") as url:
        yield url


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



@pytest.fixture
def alice(store_engine: Engine):
    """The keys of alice's account (`store_support.ALICE`), added to the store."""
    return add_account(AccountStore(store_engine), ALICE)


@pytest.fixture
def mailboxes(store_engine: Engine) -> MailboxStore:
    return MailboxStore(store_engine)
