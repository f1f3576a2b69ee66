"""One source folder's import: digest, dedupe and seal each batch; what to commit.

`FolderImport` keeps a folder's state across its batches: the digests already in
the target folder (`present`), those sealed by this run (`queued`), the digest of
every message read (`read`, for the verification) and the report's counts. `seal`
turns one batch into the commits to make (`Chunk`s): each at most `batch_messages`
/ `batch_bytes`, the last one moving the checkpoint to the batch's last UID (or to
just before the first message that could not be read, so that a later run reads it
again). A message is put in CRLF form, digested under the account's migration key
and, unless its digest is known, sealed to the account's public key.

This module is what the migration's child process (`writer`) runs besides SQLite,
so it imports nothing heavier than `sealing`; it does no I/O and never logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.migrate.sealing import ImportSealer, crlf, digest

# RFC 5322: a message begins with a header field, a name of printable characters but
# the colon, then a colon. What does not is kept as it is, and listed.
_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")


class Readable(Protocol):
    """A message as a source read it (`sources.SourceMessage`)."""

    @property
    def uid(self) -> int: ...
    @property
    def raw(self) -> bytes | None: ...  # None: not read (see `problem`)
    @property
    def flags(self) -> tuple[str, ...]: ...
    @property
    def internal_date(self) -> datetime: ...
    @property
    def problem(self) -> str | None: ...


@dataclass(frozen=True)
class FolderJob:
    """What `FolderImport` needs of a folder (nothing that opens mail)."""

    source_folder: str  # the source's name for it (checkpoints name it so)
    target: str
    special_use: str | None
    uid_validity: int
    checkpointed: bool  # IMAP: the checkpoint moves with each batch


@dataclass
class Tally:
    """A folder's counts, as `run.FolderReport` has them."""

    source_count: int = 0
    imported: int = 0
    present: int = 0
    duplicates: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    kept_raw: list[int] = field(default_factory=list)
    read: dict[int, bytes] = field(default_factory=dict)  # uid -> digest of each read


@dataclass(frozen=True)
class Sealed:
    message: Readable  # its flags and date go into the row
    digest: bytes
    size: int  # of the message in CRLF form
    sealed: bytearray  # sealing.ImportSealer.seal


@dataclass(frozen=True)
class Chunk:
    """Sealed imports to commit together, and the checkpoint's UID after them (None:
    the checkpoint stays)."""

    imports: list[Sealed]
    last_uid: int | None


class FolderImport:
    def __init__(self, job: FolderJob, present: set[bytes], *, encryption_key: bytes,
                 digest_key: bytes, batch_messages: int, batch_bytes: int) -> None:
        self.job = job
        self.tally = Tally()
        self._present = present
        self._queued: set[bytes] = set()
        self._encryption_key = encryption_key
        self._digest_key = digest_key
        self._batch_messages = batch_messages
        self._batch_bytes = batch_bytes

    def seal(self, batch: Sequence[Readable]) -> list[Chunk]:
        tally, job = self.tally, self.job
        chunks: list[Chunk] = []
        new: list[Sealed] = []
        octets = 0
        sealer = ImportSealer(self._encryption_key)
        for message in batch:
            tally.source_count += 1
            if message.raw is None:
                tally.problems.append((message.uid, message.problem or "not read"))
                continue
            text = crlf(message.raw)
            mark = digest(self._digest_key, text)
            tally.read[message.uid] = mark
            if not _HEADER_FIELD.match(text):
                tally.kept_raw.append(message.uid)
            if mark in self._queued:
                tally.duplicates += 1
                continue
            if mark in self._present:
                tally.present += 1
                continue
            self._queued.add(mark)
            if new and (len(new) >= self._batch_messages
                        or octets + len(text) > self._batch_bytes):
                chunks.append(Chunk(new, None))
                new, octets = [], 0
            sealed = sealer.seal(text, folder=job.target, flags=message.flags,
                                 internal_date=message.internal_date, message_digest=mark)
            new.append(Sealed(message, mark, len(text), sealed))
            octets += len(text)
        last = batch[-1].uid if batch else 0
        if tally.problems:  # the checkpoint stays before the first message not imported,
            last = min(last, tally.problems[0][0] - 1)  # so a later run reads it again
        chunks.append(Chunk(new, last if job.checkpointed else None))
        return chunks
