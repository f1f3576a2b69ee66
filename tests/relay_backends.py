"""The relay's storage backends for tests: `relay_backend` runs a test once per backend.

SQLite + files in the test's own directory, and PostgreSQL at 127.0.0.1:5432 in a
fresh schema of its own (skipped, saying so, when no server is reachable; see
tests/postgres.py). `Backend.open` opens a storage on it, `Backend.db` is what a
relay is given as `db`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.relay.storage import SqliteFileStorage
from bridge.relay.storage.postgres import PostgresStorage, engine_url
from tests.postgres import fresh_schema

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Backend:
    name: str
    home: Path  # the relay home (holds the SQLite database and files on "sqlite")
    db: str | None  # the PostgreSQL URL on "postgresql"

    def open(self, **settings: Any) -> SqliteFileStorage | PostgresStorage:
        if self.db is None:
            return SqliteFileStorage(self.home, **settings)
        return PostgresStorage(self.db, **settings)

    def at_rest(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        """The envelope's bytes where the backend keeps them (file or table), or None."""
        if self.db is None:
            path = self.home / "envelopes" / mailbox_id[:1].hex() / envelope_id.hex()
            return path.read_bytes() if path.exists() else None
        engine = sa.create_engine(engine_url(self.db))
        try:
            with engine.connect() as conn:
                data = conn.execute(
                    sa.text("SELECT data FROM envelope_bytes WHERE envelope_id = :id"),
                    {"id": envelope_id},
                ).scalar()
        finally:
            engine.dispose()
        return None if data is None else bytes(data)

    def dump(self) -> bytes:
        """Every value of every row of every table in the backend's schema (PostgreSQL)."""
        assert self.db is not None
        engine = sa.create_engine(engine_url(self.db))
        values: list[bytes] = []
        try:
            with engine.connect() as conn:
                for table in sa.inspect(conn).get_table_names():
                    for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608
                        values += [bytes(v) if isinstance(v, (bytes, memoryview))
                                   else str(v).encode() for v in row]
        finally:
            engine.dispose()
        return b"\x00".join(values)

    def stored_total(self) -> int:
        """Bytes of every envelope at rest (files, or rows of envelope_bytes)."""
        if self.db is None:
            return sum(p.stat().st_size for p in (self.home / "envelopes").rglob("*")
                       if p.is_file())
        engine = sa.create_engine(engine_url(self.db))
        try:
            with engine.connect() as conn:
                return int(conn.execute(
                    sa.text("SELECT coalesce(sum(length(data)), 0) FROM envelope_bytes")
                ).scalar_one())
        finally:
            engine.dispose()


def backend_for(name: str, home: Path) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend(name, home, None)
        return
    with fresh_schema("sg_relay") as url:
        yield Backend(name, home, url)


@pytest.fixture(params=BACKENDS)
def relay_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One storage backend per run of the test: SQLite + files, then PostgreSQL."""
    yield from backend_for(request.param, tmp_path)


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    """PostgreSQL alone, for what only a shared database has to show."""
    yield from backend_for("postgresql", tmp_path)
