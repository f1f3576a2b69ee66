"""The migration's child process: seals and commits the batches its parent reads.

The process that reads the source (the event loop, TLS, the FETCH reader) and the
one that digests, seals and commits run on two cores without sharing a GIL. The
parent (`pipeline.ChildStage`) starts `python -c ... main(IN, OUT)` with two pipes
(nothing crosses through a file, so no message is ever written in clear) and sends
frames over `IN`:

    Setup        once: the store's SQL (`ImportStore.sqlite_sql`; None: dry run,
                 nothing written), the account's public and migration keys, limits
    ("folder", FolderJob, present digests)      a source folder begins
    ("batch", [(uid, flags, date, date param, problem, octets)]) + the bodies
    ("end",)     the folder's last batch was sent

and reads back, over `OUT`, ("done", Tally) once every batch of the folder is
committed, or ("error", one line) before the child exits. The child's main thread
seals batch N+1 while one thread commits batch N with its checkpoint (sqlite3 lets
go of the GIL while it writes), in order, so a checkpoint never passes a batch not
stored, and another reads N+2 off the pipe. End of input (the parent closed its pipe, or
died) stops it after the last complete batch; a batch cut short is dropped, never
stored in part. It ignores SIGINT (the parent decides what a Ctrl-C stops) and
dies with its parent (Linux: PR_SET_PDEATHSIG).

Imports: the standard library, `importing` and `sealing` only (no SQLAlchemy),
so that the child is up before the first batch is read. Never logs.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue
import signal
import sqlite3
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from gateway.migrate.importing import Chunk, FolderImport

_HEAD = struct.Struct(">QQ")  # octets of the pickled part, then of the raw part after it
_IOV_MAX = 1024
_PR_SET_PDEATHSIG = 1


class ChannelClosed(Exception):
    """The other end closed its pipe (or a frame was cut short)."""


class Channel:
    """Frames over a pair of pipes: a pickled object, then raw octets (message bodies,
    written from where they are and read into one buffer)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._write_fd = write_fd
        self._lock = threading.Lock()

    def send(self, item: object, raw: Sequence[bytes] = ()) -> None:
        meta = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        parts = [memoryview(_HEAD.pack(len(meta), sum(map(len, raw)))), memoryview(meta)]
        parts += [memoryview(body) for body in raw if body]
        with self._lock:
            at = 0
            while at < len(parts):
                written = os.writev(self._write_fd, parts[at : at + _IOV_MAX])
                while written:
                    size = parts[at].nbytes
                    if written >= size:
                        written -= size
                        at += 1
                    else:
                        parts[at] = parts[at][written:]
                        written = 0

    def receive(self) -> tuple[Any, memoryview]:
        head = self._exactly(_HEAD.size)
        meta_len, raw_len = _HEAD.unpack(head)
        item = pickle.loads(self._exactly(meta_len))  # noqa: S301 - our own child or parent
        return item, memoryview(self._exactly(raw_len))

    def _exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        with memoryview(buffer) as view:
            at = 0
            while at < size:
                got = self._reader.readinto(view[at:])
                if not got:
                    raise ChannelClosed()
                at += got
        return buffer

    def close(self) -> None:
        """Close both ends, after a `send` under way in another thread."""
        with self._lock:
            self._reader.close()
            os.close(self._write_fd)


@dataclass(frozen=True)
class Setup:
    # gateway.store.imports.SqliteImportSql as a dict (its class would bring SQLAlchemy
    # into the child with it), or None for a dry run
    sql: dict[str, Any] | None
    account_id: int
    source_id: bytes
    encryption_key: bytes
    digest_key: bytes
    batch_messages: int
    batch_bytes: int


class Message(NamedTuple):
    """A batch's message as the child gets it (`importing.Readable`)."""

    uid: int
    raw: bytes | None
    flags: tuple[str, ...]
    internal_date: datetime
    date_param: object  # how the store keeps internal_date
    problem: str | None


def batch_frame(messages: Sequence[Any], date_param: Any) -> tuple[object, list[bytes]]:
    """A batch of `sources.SourceMessage` as the frame `main` reads."""
    meta = [(m.uid, m.flags, m.internal_date, date_param(m.internal_date), m.problem,
             -1 if m.raw is None else len(m.raw)) for m in messages]
    return ("batch", meta), [m.raw for m in messages if m.raw is not None]


def _messages(meta: list[tuple[Any, ...]], raw: memoryview) -> list[Message]:
    found: list[Message] = []
    at = 0
    for uid, flags, date, param, problem, octets in meta:
        body = None
        if octets >= 0:
            body = bytes(raw[at : at + octets])
            at += octets
        found.append(Message(uid, body, flags, date, param, problem))
    return found


def _offset_minutes(moment: datetime) -> int:
    """The zone of an aware `moment` in minutes east of UTC (`store.models.utc_offset_minutes`,
    whose module would bring SQLAlchemy into this process)."""
    offset = moment.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


class _Store:
    """`ImportStore.add` on the SQLite file, with the statements the parent compiled."""

    def __init__(self, setup: Setup) -> None:
        assert setup.sql is not None  # noqa: S101 - not a dry run
        sql = self._sql = SimpleNamespace(**setup.sql)
        self._setup = setup
        self._db = sqlite3.connect(sql.database, timeout=sql.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        for pragma in sql.pragmas:
            self._db.execute(pragma)

    def add(self, folder: FolderImport, chunk: Chunk) -> int:
        sql, job, account = self._sql, folder.job, self._setup.account_id
        rows = []
        for item in chunk.imports:
            message = cast(Message, item.message)
            values = {"account_id": account, "folder": job.target,
                      "special_use": job.special_use, "digest": item.digest,
                      "flags": " ".join(message.flags), "internal_date": message.date_param,
                      "internal_offset": _offset_minutes(message.internal_date),
                      "size": item.size, "state": sql.pending, "sealed": item.sealed}
            rows.append(tuple(values[name] for name in sql.insert_params))
        if not rows and chunk.last_uid is None:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            added = self._db.executemany(sql.insert, rows).rowcount if rows else 0
            if chunk.last_uid is not None:
                values = {"account_id": account, "source": self._setup.source_id,
                          "folder": job.source_folder, "uid_validity": job.uid_validity,
                          "last_uid": chunk.last_uid}
                self._db.execute(sql.checkpoint,
                                 tuple(values[name] for name in sql.checkpoint_params))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return max(added, 0)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: end of input still stops it
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def serve(channel: Channel) -> None:
    setup: Setup = channel.receive()[0]
    store = _Store(setup) if setup.sql is not None else None
    commits: queue.Queue[tuple[FolderImport, list[Chunk]] | None] = queue.Queue(maxsize=1)

    def commit() -> None:
        try:
            while (work := commits.get()) is not None:
                folder, chunks = work
                for chunk in chunks:
                    if store is None:
                        folder.tally.imported += len(chunk.imports)
                    else:
                        folder.tally.imported += store.add(folder, chunk)
                if not chunks:  # the folder's end
                    channel.send(("done", folder.tally))
        except Exception as e:  # noqa: BLE001 - any failure goes to the parent, in one line
            _fail(channel, e)

    def receive() -> None:
        try:
            while True:
                frames.put(channel.receive())
        except ChannelClosed:
            frames.put(None)
        except Exception as e:  # noqa: BLE001
            _fail(channel, e)

    # The next batch is read off the pipe while one is sealed, so the parent's write
    # never waits for the sealing.
    frames: queue.Queue[tuple[Any, memoryview] | None] = queue.Queue(maxsize=1)
    committer = threading.Thread(target=commit, name="migrate-commit", daemon=True)
    committer.start()
    threading.Thread(target=receive, name="migrate-receive", daemon=True).start()
    folder: FolderImport | None = None
    try:
        while (frame := frames.get()) is not None:
            item, raw = frame
            if item[0] == "folder":
                folder = FolderImport(item[1], item[2], encryption_key=setup.encryption_key,
                                      digest_key=setup.digest_key,
                                      batch_messages=setup.batch_messages,
                                      batch_bytes=setup.batch_bytes)
            elif item[0] == "batch" and folder is not None:
                commits.put((folder, folder.seal(_messages(item[1], raw))))
            elif item[0] == "end" and folder is not None:
                commits.put((folder, []))
                folder = None
    except Exception as e:  # noqa: BLE001
        _fail(channel, e)
    commits.put(None)
    committer.join()


def _fail(channel: Channel, error: BaseException) -> None:
    text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    try:
        channel.send(("error", text))
    except OSError:
        pass
    os._exit(1)


def main(read_fd: int, write_fd: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    sys.stdin = sys.stdout = None  # frames use the pipes only
    serve(Channel(read_fd, write_fd))
