"""One migration: every folder of a source into an account's pending imports, verified.

Per source folder:

1. Resume. An IMAP folder's checkpoint (UIDVALIDITY + last UID done, in the gateway
   store) skips what an earlier run stored. A changed UIDVALIDITY means the UIDs
   name other messages now: the folder is read again from the start, and the digest
   dedup keeps what was stored from coming twice. File sources are read again in
   full (local and cheap); their digests alone skip what is stored.
2. Import, in batches (`importing`): each message is put in CRLF form, digested
   under the account's migration key, and unless its digest is in the target
   folder already, sealed to the account's public key; the batch and the
   checkpoint commit together. Reading from the source, sealing and committing
   overlap (`pipeline`): while the event loop reads batch N+2, a child process
   seals N+1 and commits N, so the source never waits for the sealing.
3. Verify: the digest of every message of the source folder (those skipped by the
   checkpoint are read again) must be among the target folder's imports; a message
   that could not be read or was over the size limit fails the folder too (it is
   listed in the report, never dropped silently). One that does not parse as mail
   (no header field first) is imported as it is, and listed.
4. With `delete_source`, a verified folder's messages are deleted at the source
   (or moved to the folder the operator named: `ImapSource`).

`--dry-run` reads and digests everything and writes nothing. No step writes a
message in clear, and nothing here logs content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.encoding
import nacl.hash

from gateway.migrate.importing import FolderJob, Tally
from gateway.migrate.pipeline import Stage, open_stage
from gateway.migrate.progress import FolderProgress
from gateway.migrate.sealing import crlf, digest
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import Source, SourceFolder, SourceMessage
from gateway.store.imports import ImportStore, ImportTarget

log = logging.getLogger("sealgate.migrate")
_SOURCE_PERSON = b"sg-import-source"


@dataclass
class FolderReport:
    source: str
    target: str
    source_count: int = 0  # messages read at the source in this run
    imported: int = 0  # stored by this run
    present: int = 0  # in the bubble already (an earlier run, or another source folder)
    duplicates: int = 0  # byte-identical copies within this source folder
    resumed_after: int = 0  # the checkpoint's last UID (0: from the start)
    uid_validity_changed: bool = False
    problems: list[tuple[int, str]] = field(default_factory=list)  # (uid, why not imported)
    kept_raw: list[int] = field(default_factory=list)  # imported as they are: not mail-shaped
    missing: int = 0  # source messages whose digest is not among the imports
    verified: bool = False
    deleted: int = 0  # deleted (or moved away) at the source after verification
    moved_to: str | None = None  # the source folder they were moved to (--move-to)

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source, "target": self.target, "source_count": self.source_count,
            "imported": self.imported, "present": self.present, "duplicates": self.duplicates,
            "resumed_after": self.resumed_after,
            "uid_validity_changed": self.uid_validity_changed,
            "problems": [{"uid": uid, "problem": why} for uid, why in self.problems],
            "kept_raw": self.kept_raw,
            "missing": self.missing, "verified": self.verified, "deleted": self.deleted,
            "moved_to": self.moved_to,
        }


@dataclass
class MigrationReport:
    kind: str
    dry_run: bool
    folders: list[FolderReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(folder.verified for folder in self.folders)

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "dry_run": self.dry_run, "ok": self.ok,
            "folders": [folder.as_json() for folder in self.folders],
        }


ProgressFactory = Callable[[str, int], FolderProgress]


class Migration:
    def __init__(
        self,
        imports: ImportStore,
        target: ImportTarget,
        source: Source,
        settings: MigrateSettings,
        progress: ProgressFactory,
        *,
        dry_run: bool = False,
        delete_source: bool = False,
    ) -> None:
        self._imports = imports
        self._target = target
        self._source = source
        self._settings = settings
        self._progress = progress
        self._dry_run = dry_run
        self._delete = delete_source and not dry_run
        self._paced = 0
        self._started: float | None = None
        self._stage: Stage | None = None
        self._source_id = nacl.hash.blake2b(
            source.identity.encode("utf-8", "surrogateescape"), digest_size=32,
            key=target.digest_key, person=_SOURCE_PERSON, encoder=nacl.encoding.RawEncoder,
        )

    async def start(self) -> Stage:
        """Start the stage that seals and commits (`pipeline`; a child process on a
        gateway's store) if not started yet. Called before the source lists its
        folders, it starts while they are listed; `run` calls it otherwise."""
        if self._stage is None:
            self._stage = await open_stage(self._imports, self._target, self._source_id,
                                           self._settings, dry_run=self._dry_run)
        return self._stage

    async def close(self) -> None:
        stage, self._stage = self._stage, None
        if stage is not None:
            await stage.close()

    async def run(self, folders: list[SourceFolder]) -> MigrationReport:
        report = MigrationReport(self._source.kind, self._dry_run)
        stage = await self.start()
        try:
            for folder in folders:
                report.folders.append(await self.migrate_folder(folder, stage))
        finally:
            await self.close()
        return report

    async def migrate_folder(self, folder: SourceFolder, stage: Stage) -> FolderReport:
        report = FolderReport(folder.display, folder.target.name)
        after = await self._resume_point(folder, report)
        present = await asyncio.to_thread(
            self._imports.digests, self._target.account_id, folder.target.name
        )
        await stage.begin(FolderJob(folder.name, folder.target.name, folder.target.special_use,
                                    folder.uid_validity, self._source.kind == "imap"), present)
        progress = self._progress(folder.display, max(0, folder.count - after))
        # The source reads batch N+1 while the stage seals and commits N (in order, so
        # a checkpoint never passes a batch not stored).
        try:
            async with contextlib.aclosing(self._source.read(folder, after)) as batches:
                reading: asyncio.Future[list[SourceMessage] | None] = asyncio.ensure_future(
                    anext(batches, None))
                try:
                    while (batch := await reading) is not None:
                        reading = asyncio.ensure_future(anext(batches, None))
                        await stage.put(batch)
                        progress.advance(len(batch), sum(message.size for message in batch))
                        await self._pace(len(batch))
                finally:
                    if not reading.done():  # the generator must be idle to be closed
                        reading.cancel()
                        with contextlib.suppress(BaseException):
                            await reading
        except BaseException:
            # What was read before the failure is still stored (the next run resumes
            # after it); the failure itself is what the caller sees.
            with contextlib.suppress(Exception):
                await stage.end()
            raise
        finally:
            progress.close()
        tally = await stage.end()
        _count(report, tally)
        read = tally.read
        if after:
            await self._digest_done_part(folder, after, read, report)
        await self._verify(folder, read, report)
        if report.verified and self._delete and read:
            report.moved_to = await self._source.delete(folder, sorted(read))
            report.deleted = len(read)
        return report

    async def _pace(self, messages: int) -> None:
        """Wait so that reading stays under `max_messages_per_second`."""
        rate = self._settings.max_messages_per_second
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        self._paced += messages
        if self._started is None:
            self._started = loop.time()
        ahead = self._started + self._paced / rate - loop.time()
        if ahead > 0:
            await asyncio.sleep(ahead)

    async def _resume_point(self, folder: SourceFolder, report: FolderReport) -> int:
        if self._source.kind != "imap":
            return 0
        checkpoint = await asyncio.to_thread(
            self._imports.checkpoint, self._target.account_id, self._source_id, folder.name
        )
        if checkpoint is None:
            return 0
        if checkpoint.uid_validity != folder.uid_validity:
            log.warning("migrate: folder %s: UIDVALIDITY changed; reading it all again "
                        "(messages already imported are not imported twice)", folder.display)
            report.uid_validity_changed = True
            return 0
        report.resumed_after = checkpoint.last_uid
        return checkpoint.last_uid

    async def _digest_done_part(
        self, folder: SourceFolder, after: int, read: dict[int, bytes], report: FolderReport
    ) -> None:
        """Read again the messages an earlier run imported (up to UID `after`), for the
        verification and for --delete-source: only their digests are kept."""
        async with contextlib.aclosing(self._source.read(folder, 0)) as batches:
            async for batch in batches:
                if self._digest_known(batch, after, read, report):
                    return

    def _digest_known(
        self, batch: list[SourceMessage], after: int, read: dict[int, bytes],
        report: FolderReport,
    ) -> bool:
        """Digest the messages up to UID `after`; True once past it."""
        for message in batch:
            if message.uid > after:
                return True
            report.source_count += 1
            if message.raw is None:
                report.problems.append((message.uid, message.problem or "not read"))
            else:
                read[message.uid] = digest(self._target.digest_key, crlf(message.raw))
                report.present += 1
        return False

    async def _verify(
        self, folder: SourceFolder, read: dict[int, bytes], report: FolderReport
    ) -> None:
        if self._dry_run:
            report.verified = not report.problems and report.source_count >= folder.count
            return
        stored = await asyncio.to_thread(
            self._imports.digests, self._target.account_id, folder.target.name
        )
        report.missing = len(set(read.values()) - stored)
        # Fewer messages than the folder held when listed: some vanished from the source
        # meanwhile (or it answered short); not verified, so never deleted.
        short = report.source_count < folder.count
        report.verified = report.missing == 0 and not report.problems and not short


def _count(report: FolderReport, tally: Tally) -> None:
    report.source_count += tally.source_count
    report.imported += tally.imported
    report.present += tally.present
    report.duplicates += tally.duplicates
    report.problems += tally.problems
    report.kept_raw += tally.kept_raw


def _removed(folder: FolderReport) -> str:
    if not folder.deleted:
        return ""
    if folder.moved_to is not None:
        return f", {folder.deleted} moved to {folder.moved_to}"
    return f", {folder.deleted} deleted"


def format_table(report: MigrationReport) -> str:
    """The summary table: one line per folder, then the problems, then the verdict."""
    head = ("source folder", "bubble folder", "source", "new", "present", "dup", "missing",
            "verified")
    rows = [head] + [
        (f.source, f.target, str(f.source_count), str(f.imported), str(f.present),
         str(f.duplicates), str(f.missing + len(f.problems)),
         ("yes" if f.verified else "NO") + _removed(f))
        for f in report.folders
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    for folder in report.folders:
        if folder.uid_validity_changed:
            lines.append(f"{folder.source}: UIDVALIDITY changed since the last run; read again")
        lines += [f"{folder.source}: message {uid} not imported: {why}"
                  for uid, why in folder.problems]
        lines += [f"{folder.source}: message {uid} imported as it is: it does not begin "
                  "with a header field, so it does not parse as mail" for uid in folder.kept_raw]
    what = "dry run: nothing written" if report.dry_run else "pending until the account unlocks"
    verdict = "every folder verified" if report.ok else "MISMATCH: not every message is imported"
    lines.append(f"{verdict} ({what})")
    return "\n".join(lines)
