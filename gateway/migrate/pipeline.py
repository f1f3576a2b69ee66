"""Where the migration's batches are sealed and committed while the next is read.

    ChildStage   a child process (`writer`), on a store in SQLite (a gateway's) and
                 for a dry run: reading the source and sealing + committing run on
                 two cores, with no GIL shared between them
    ThreadStage  worker threads of this process, on any other database: batch N+1
                 is sealed in one while N commits in another

Both take a folder's batches in order (`begin`, `put`, `end`) and keep at most one
batch on its way in besides the one being sealed and the one committing, so memory
stays within a few `batch_bytes`. `end` returns once every batch put is committed,
with the folder's counts; it is also how a failed run keeps what it read before
the failure. Nothing here writes a message anywhere but into the child's pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import gateway
from gateway.migrate.errors import MigrateError
from gateway.migrate.importing import Chunk, FolderImport, FolderJob, Tally
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import SourceMessage
from gateway.migrate.writer import Channel, ChannelClosed, Setup, batch_frame
from gateway.store.imports import Checkpoint, ImportStore, ImportTarget, NewImport

_BOOT = ("import sys; sys.path[:0] = sys.argv[4:]; from gateway.migrate.writer import main; "
         "main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))")
_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: a batch's bodies go through in fewer turns
_F_SETPIPE_SZ = 1031
_EXIT_WAIT = 30.0  # seconds for the child to finish its last commit after end of input


class Stage(Protocol):
    async def begin(self, job: FolderJob, present: set[bytes]) -> None: ...
    async def put(self, batch: Sequence[SourceMessage]) -> None: ...
    async def end(self) -> Tally: ...
    async def close(self) -> None: ...


async def open_stage(imports: ImportStore, target: ImportTarget, source_id: bytes,
                     settings: MigrateSettings, *, dry_run: bool) -> Stage:
    sql = imports.sqlite_sql()
    if sql is None and not dry_run:
        return ThreadStage(imports, target, source_id, settings)
    store = None if dry_run or sql is None else dataclasses.asdict(sql)
    setup = Setup(store, target.account_id, source_id, target.encryption_key,
                  target.digest_key, settings.batch_messages, settings.batch_bytes)
    return await ChildStage.start(setup, imports.date_param())


class ChildStage:
    def __init__(self, process: subprocess.Popen[bytes], channel: Channel,
                 date_param: Callable[[datetime], object]) -> None:
        self._process = process
        self._channel = channel
        self._date_param = date_param
        self._sending: asyncio.Future[None] | None = None

    @classmethod
    async def start(cls, setup: Setup, date_param: Callable[[datetime], object]) -> ChildStage:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        # No site import in the child (it costs more than the rest of its start-up):
        # it gets this process's import path instead, with the package's own root.
        path = [str(Path(gateway.__file__).resolve().parent.parent),
                *(entry for entry in sys.path if entry)]
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(from_parent, _F_SETPIPE_SZ, _PIPE_SIZE)
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                [sys.executable, "-S", "-c", _BOOT, str(to_child), str(from_child),
                 str(os.getpid()), *path],
                pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as e:
            for fd in (to_child, from_parent, to_parent, from_child):
                os.close(fd)
            raise MigrateError(f"cannot start the migration's writer process: {e}") from None
        os.close(to_child)
        os.close(from_child)
        stage = cls(process, Channel(to_parent, from_parent), date_param)
        await stage._send(setup)
        return stage

    async def begin(self, job: FolderJob, present: set[bytes]) -> None:
        await self._send(("folder", job, present))

    async def put(self, batch: Sequence[SourceMessage]) -> None:
        if self._sending is not None:
            await asyncio.shield(self._sending)  # the child took the previous batch
        frame, raw = batch_frame(batch, self._date_param)
        self._sending = asyncio.ensure_future(self._send(frame, raw))

    async def end(self) -> Tally:
        if self._sending is not None:
            await asyncio.shield(self._sending)
            self._sending = None
        await self._send(("end",))
        item = await self._receive()
        tally: Tally = item[1]
        return tally

    async def close(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:  # a failed send's error is the child's, which end() says
            sending.add_done_callback(lambda done: done.cancelled() or done.exception())
        # End of input (once a write under way is done): the child commits what it
        # holds and exits.
        await asyncio.to_thread(self._channel.close)
        try:
            await asyncio.to_thread(self._process.wait, _EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)

    async def _send(self, item: object, raw: Sequence[bytes] = ()) -> None:
        try:
            await asyncio.to_thread(self._channel.send, item, raw)
        except BrokenPipeError:
            await self._receive()  # the child's last word says why it stopped
            raise  # (not reached: `_receive` raises)

    async def _receive(self) -> tuple[str, Tally]:
        try:
            item, _ = await asyncio.to_thread(self._channel.receive)
        except ChannelClosed:
            code = await asyncio.to_thread(self._process.wait)
            raise MigrateError(
                f"the migration's writer process ended (exit status {code}); "
                "what it committed is kept: run again to resume") from None
        if item[0] == "error":
            raise MigrateError(f"the migration's writer process failed: {item[1]}")
        return item  # type: ignore[no-any-return]


class ThreadStage:
    def __init__(self, imports: ImportStore, target: ImportTarget, source_id: bytes,
                 settings: MigrateSettings) -> None:
        self._imports = imports
        self._target = target
        self._source_id = source_id
        self._settings = settings
        self._folder: FolderImport | None = None
        self._storing: asyncio.Future[None] | None = None

    async def begin(self, job: FolderJob, present: set[bytes]) -> None:
        self._folder = FolderImport(
            job, present, encryption_key=self._target.encryption_key,
            digest_key=self._target.digest_key, batch_messages=self._settings.batch_messages,
            batch_bytes=self._settings.batch_bytes)

    async def put(self, batch: Sequence[SourceMessage]) -> None:
        folder = self._folder
        assert folder is not None  # noqa: S101 - begin() came first
        chunks = await asyncio.to_thread(folder.seal, batch)
        if self._storing is not None:
            await self._storing
        self._storing = asyncio.ensure_future(asyncio.to_thread(self._store, folder, chunks))

    async def end(self) -> Tally:
        if self._storing is not None:
            storing, self._storing = self._storing, None
            await storing
        assert self._folder is not None  # noqa: S101
        return self._folder.tally

    async def close(self) -> None:
        if self._storing is not None:
            with contextlib.suppress(Exception):
                await self._storing

    def _store(self, folder: FolderImport, chunks: list[Chunk]) -> None:
        job = folder.job
        for chunk in chunks:
            checkpoint = None
            if chunk.last_uid is not None:
                checkpoint = (self._source_id, job.source_folder,
                              Checkpoint(job.uid_validity, chunk.last_uid))
            if not chunk.imports and checkpoint is None:
                continue
            new = [NewImport(job.target, job.special_use, item.digest, item.message.flags,
                             item.message.internal_date, item.size, bytes(item.sealed))
                   for item in chunk.imports]
            folder.tally.imported += self._imports.add(self._target.account_id, new,
                                                       checkpoint)
