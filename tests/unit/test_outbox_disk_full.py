"""The outbox on a full disk: a real size-limited tmpfs (root only; skipped elsewhere,
saying so), SQLite in WAL mode on it. A write that finds no room raises `StorageFull`
and keeps nothing; what was committed before stays whole; once space frees, the same
engine writes again without being reopened."""

from __future__ import annotations

import errno
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.store.db import StorageFull, open_engine
from gateway.store.outbox import Outbox
from tests.tmpfs import small_tmpfs


def item(size: int) -> tuple[bytes, bytes, tuple[str, ...]]:
    return secrets.token_bytes(16), secrets.token_bytes(size), ("http://127.0.0.1:1",)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s file system."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def test_a_full_disk_refuses_the_write_keeps_the_rest_and_recovers(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "4m") as home:
        engine = open_engine(f"sqlite:///{home}/gateway.db")
        outbox = Outbox(engine)
        kept = [item(2000) for _ in range(5)]
        outbox.put(kept)
        filler = fill(home)
        with pytest.raises(StorageFull):
            outbox.put([item(512 * 1024)])
        assert outbox.pending_count() == 5
        due = outbox.due(datetime.now(UTC), 2**40)
        assert sorted(e.envelope for e in due) == sorted(i[1] for i in kept)
        filler.unlink()
        outbox.put([item(512 * 1024)])  # the same engine, no restart
        assert outbox.pending_count() == 6
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        engine.dispose()
