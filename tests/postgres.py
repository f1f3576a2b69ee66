"""A fresh PostgreSQL schema per test, on the server at 127.0.0.1:5432 (trust auth).

`small_tablespace` gives a test a tablespace on a small tmpfs, for a disk that fills.

Tests that run a store on PostgreSQL get a URL whose search_path is a new schema,
dropped afterwards; without a server they are skipped, saying so, except in CI
(CI=true), where .ci/run starts the server: there a missing server fails the test.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin(**options: str) -> Engine:
    """An engine on the test database; skips (fails in CI) when no server answers."""
    admin = create_engine(POSTGRES_URL, **options)
    try:
        admin.connect().close()
    except OperationalError:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    return admin


@contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = _admin()
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def small_tablespace(prefix: str, size: str) -> Iterator[str]:
    """A fresh schema's URL whose tables go to a new tablespace of `size` on a tmpfs;
    the server must run on this machine, as the `postgres` user."""
    from tests.tmpfs import small_tmpfs

    admin = _admin(isolation_level="AUTOCOMMIT")  # no tablespace DDL in a transaction
    base = Path(tempfile.mkdtemp(prefix="sg-tablespace-"))
    base.chmod(0o755)  # the server, as postgres, reaches the mount point through it
    name = f"sg_small_{secrets.token_hex(6)}"
    try:
        with small_tmpfs(base / "space", size) as space:
            owner = pwd.getpwnam("postgres")
            os.chown(space, owner.pw_uid, owner.pw_gid)
            with admin.connect() as connection:
                connection.execute(text(f"CREATE TABLESPACE {name} LOCATION '{space}'"))
            try:
                with fresh_schema(prefix) as url:
                    yield f"{url}%20-cdefault_tablespace%3D{name}"
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f"DROP TABLESPACE {name}"))
    finally:
        admin.dispose()
        shutil.rmtree(base, ignore_errors=True)
