"""The migration's sealing and committing stage: a child process on SQLite, threads on
PostgreSQL; both must store the same, dedupe, and report a failure in one line."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.migrate.errors import MigrateError
from gateway.migrate.importing import FolderJob
from gateway.migrate.pipeline import ChildStage, ThreadStage, open_stage
from gateway.migrate.progress import folder_progress
from gateway.migrate.run import Migration
from gateway.migrate.sealing import crlf, open_import
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import MboxSource, SourceMessage
from gateway.migrate.writer import Setup
from gateway.store.imports import ImportStore
from tests.unit.store_support import ALICE

pytest_plugins = ["tests.unit.store_fixtures"]


def mbox(path: Path, count: int) -> list[bytes]:
    bodies = [b"Subject: number %d\n\nline one\nline two %d\n" % (n, n) for n in range(count)]
    bodies.append(bodies[0])  # a byte-identical copy: stored once
    path.write_bytes(b"".join(b"From a@legacy.example Tue Mar  5 10:11:12 2019\n" + body + b"\n"
                              for body in bodies))
    return bodies


def migrate(imports: ImportStore, path: Path, *, dry_run: bool = False):
    settings = MigrateSettings(batch_messages=7)
    source = MboxSource([path], folder=None, max_bytes=settings.max_message_bytes,
                        batch=settings.batch_messages, quoting="mboxrd")

    async def go():
        folders = await source.folders()
        target = await asyncio.to_thread(imports.target, ALICE)
        migration = Migration(imports, target, source, settings,
                              lambda name, total: folder_progress(name, total, bar=False),
                              dry_run=dry_run)
        return await migration.run(folders)

    return asyncio.run(go())


def test_each_message_is_sealed_and_stored_once_and_a_second_run_finds_them(
    store_engine, alice, tmp_path
):
    imports = ImportStore(store_engine)
    bodies = mbox(tmp_path / "inbox.mbox", 30)

    dry = migrate(imports, tmp_path / "inbox.mbox", dry_run=True)
    assert dry.ok and imports.counts(imports.target(ALICE).account_id) == {}

    (folder,) = migrate(imports, tmp_path / "inbox.mbox").folders
    assert (folder.verified, folder.imported, folder.duplicates, folder.source_count) == (
        True, 30, 1, 31)
    target = imports.target(ALICE)
    pending = imports.pending(target.account_id, 100, 1 << 30)
    opened = sorted(open_import(alice, item.sealed, folder=item.folder, flags=item.flags,
                                internal_date=item.internal_date, size=item.size,
                                message_digest=item.digest) for item in pending)
    assert opened == sorted(crlf(body) for body in bodies[:-1])

    (again,) = migrate(imports, tmp_path / "inbox.mbox").folders
    assert (again.verified, again.imported, again.present) == (True, 0, 31)  # the copy too
    assert len(imports.pending(target.account_id, 100, 1 << 30)) == 30


def test_the_stage_is_a_child_process_on_sqlite_and_threads_elsewhere(store_engine, alice):
    imports = ImportStore(store_engine)
    target = imports.target(ALICE)

    async def go():
        stage = await open_stage(imports, target, b"s" * 32, MigrateSettings(), dry_run=False)
        await stage.close()
        return stage

    kind = ChildStage if store_engine.dialect.name == "sqlite" else ThreadStage
    assert isinstance(asyncio.run(go()), kind)


def test_a_failing_child_is_one_line_and_stores_nothing_of_its_batch(store_engine, alice):
    if store_engine.dialect.name != "sqlite":
        pytest.skip("the child process runs on SQLite stores")
    imports = ImportStore(store_engine)
    target = imports.target(ALICE)
    sql = imports.sqlite_sql()
    assert sql is not None
    # An account that is not there: the store's foreign key refuses the rows.
    setup = Setup(dataclasses.asdict(sql), target.account_id + 1000, b"s" * 32,
                  target.encryption_key, target.digest_key, 500, 1 << 20)
    when = datetime(2020, 1, 1, tzinfo=UTC)
    batch = [SourceMessage(uid, b"Subject: %d\r\n\r\nbody\r\n" % uid, ("\\Seen",), when, 20)
             for uid in range(1, 6)]

    async def go():
        stage = await ChildStage.start(setup, imports.date_param())
        try:
            await stage.begin(FolderJob("INBOX", "INBOX", None, 7, checkpointed=True), set())
            await stage.put(batch)
            with pytest.raises(MigrateError) as failed:
                await stage.end()
        finally:
            await stage.close()
        return str(failed.value), stage._process.returncode  # noqa: SLF001

    message, code = asyncio.run(go())
    assert message == ("the migration's writer process failed: "
                       "IntegrityError: FOREIGN KEY constraint failed")
    assert code == 1
    assert imports.counts(target.account_id) == {}
    assert imports.checkpoint(target.account_id + 1000, b"s" * 32, "INBOX") is None


def test_each_stage_keeps_the_zone_of_a_source_date(store_engine, alice):
    imports = ImportStore(store_engine)
    target = imports.target(ALICE)
    late = datetime(2025, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    batch = [SourceMessage(1, b"Subject: late\r\n\r\nbody\r\n", ("\\Seen",), late, 20)]

    async def go():
        stage = await open_stage(imports, target, b"s" * 32, MigrateSettings(), dry_run=False)
        try:
            await stage.begin(FolderJob("INBOX", "INBOX", None, 7, checkpointed=True), set())
            await stage.put(batch)
            await stage.end()
        finally:
            await stage.close()

    asyncio.run(go())
    (pending,) = imports.pending(target.account_id, 10, 1 << 20)
    assert pending.internal_date == late
    assert pending.internal_date.utcoffset() == timedelta(hours=-5)
