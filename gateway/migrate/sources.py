"""What the migration reads from: a source's folders and their messages.

`Source` is the contract the migration (`run`) drives; `imap.ImapSource` and the two
file sources here implement it:

    MboxSource     mbox files (stdlib `mailbox.mbox` splits them), one folder per
                   file or all into `--folder`; `>From ` quoting undone as mboxrd
                   (every `>+From ` line loses one `>`) or mboxo (only `>From `);
                   flags from Status/X-Status, keywords from X-Keywords and
                   X-Mozilla-Keys, the date from the `From ` line
    MaildirSource  a Maildir: the root is INBOX, Maildir++ folders (".A.B") and
                   LAYOUT=fs folders (subdirectories) below it; flags from file
                   names (":2,FRS"), Dovecot's keyword letters from dovecot-keywords,
                   the date from the file's mtime (as Dovecot keeps it)

A message's `uid` is its UID at an IMAP source and its position (from 1) in a file
source. A message over `max_bytes` is not read: it comes with `problem` set, so the
report lists it. File sources never write to what they read.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import mailbox
import os
import re
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from gateway.migrate.errors import SourceError
from gateway.migrate.folders import FolderNameError, Target, decode_mutf7, target_folder


@dataclass(frozen=True)
class SourceMessage:
    uid: int
    raw: bytes | None  # None: not read (see `problem`)
    flags: tuple[str, ...]
    internal_date: datetime
    size: int
    problem: str | None = None


@dataclass(frozen=True)
class SourceFolder:
    name: str  # as the source names it (for IMAP: the wire name, modified UTF-7)
    display: str  # decoded, for the report
    target: Target
    uid_validity: int
    count: int  # messages in it when listed
    location: str = field(default="", compare=False)  # a file source's path


class Source(Protocol):
    @property
    def identity(self) -> str:
        """Names the source (server and user, or file paths) for its checkpoints."""

    @property
    def kind(self) -> str: ...

    async def folders(self) -> list[SourceFolder]: ...

    def read(
        self, folder: SourceFolder, after_uid: int
    ) -> AsyncGenerator[list[SourceMessage], None]:
        """The folder's messages with a UID above `after_uid`, in UID order, in batches."""

    async def delete(self, folder: SourceFolder, uids: Sequence[int]) -> str | None:
        """Remove these messages from the folder (only IMAP sources can); the folder
        they were moved to, or None when deleted."""

    async def close(self) -> None: ...


async def _batches(
    messages: Iterator[SourceMessage], batch: int
) -> AsyncGenerator[list[SourceMessage], None]:
    """A blocking iterator of messages as batches read in a worker thread."""

    def take() -> list[SourceMessage]:
        return [message for _, message in zip(range(batch), messages, strict=False)]

    while chunk := await asyncio.to_thread(take):
        yield chunk


class _FileSource:
    kind = "file"

    def __init__(self, paths: Sequence[Path], max_bytes: int, batch: int) -> None:
        self._paths = [path.resolve() for path in paths]
        self._max_bytes = max_bytes
        self._batch = batch

    @property
    def identity(self) -> str:
        return "\0".join(str(path) for path in self._paths)

    async def delete(self, folder: SourceFolder, uids: Sequence[int]) -> str | None:
        raise SourceError("file sources are never deleted from")

    async def close(self) -> None:
        return None


# -- mbox ------------------------------------------------------------------------------

_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_MBOXO_QUOTED = re.compile(rb"^>(From )", re.MULTILINE)
_MBOX_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "T": "\\Draft",
               "D": "\\Deleted"}
OVERSIZE = "over the size limit"


class MboxSource(_FileSource):
    kind = "mbox"

    def __init__(
        self, paths: Sequence[Path], *, folder: str | None, max_bytes: int, batch: int,
        quoting: str = "mboxrd",
    ) -> None:
        super().__init__(paths, max_bytes, batch)
        self._folder = folder
        self._unquote = _MBOXRD_QUOTED if quoting == "mboxrd" else _MBOXO_QUOTED

    async def folders(self) -> list[SourceFolder]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[SourceFolder]:
        found = []
        for path in self._paths:
            if not path.is_file():
                raise SourceError(f"no mbox file at {path}")
            box = mailbox.mbox(path, create=False)
            try:
                count = len(box)
            finally:
                box.close()
            name = self._folder or ("INBOX" if path.stem.lower() == "inbox" else path.stem)
            target = target_folder(name.split("/"))
            assert target is not None  # noqa: S101 - no attributes: never virtual
            found.append(SourceFolder(name, str(path), target, 1, count, str(path)))
        return found

    def read(
        self, folder: SourceFolder, after_uid: int
    ) -> AsyncGenerator[list[SourceMessage], None]:
        return _batches(self._messages(Path(folder.location), after_uid), self._batch)

    def _messages(self, path: Path, after_uid: int) -> Iterator[SourceMessage]:
        box = mailbox.mbox(path, create=False)
        fallback = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        try:
            for uid, key in enumerate(box.keys(), start=1):
                if uid <= after_uid:
                    continue
                with box.get_file(key, from_=True) as file:
                    from_line = file.readline()
                    message = file.read(self._max_bytes + 1)  # more: over the limit
                if len(message) > self._max_bytes:
                    yield SourceMessage(uid, None, (), fallback, len(message), OVERSIZE)
                    continue
                message = self._unquote.sub(rb"\1", message)
                flags, when = _mbox_meta(from_line, message)
                yield SourceMessage(uid, message, flags, when or fallback, len(message))
        finally:
            box.close()


_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _mbox_meta(from_line: bytes, message: bytes) -> tuple[tuple[str, ...], datetime | None]:
    header = _HEADERS.parsebytes(message.split(b"\n\n", 1)[0] + b"\n\n")
    letters = str(header.get("Status", "")) + str(header.get("X-Status", ""))
    flags = {_MBOX_FLAGS[ch] for ch in letters if ch in _MBOX_FLAGS}
    for name in ("X-Keywords", "X-Mozilla-Keys"):
        for value in header.get_all(name, []):
            flags.update(word for word in re.split(r"[\s,]+", str(value)) if _atom(word))
    return tuple(sorted(flags)), _from_line_date(from_line) or _header_date(header)


def _atom(word: str) -> bool:
    return bool(word) and not any(ch in '(){%*"\\]' or ord(ch) <= 0x20 for ch in word)


def _from_line_date(line: bytes) -> datetime | None:
    # "From sender Tue Dec  1 09:00:00 2026": the asctime date is the last 24 characters.
    text = line.decode("ascii", "replace").rstrip()
    try:
        moment = datetime.strptime(" ".join(text.split()[-5:]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC)


def _header_date(header: email.message.Message) -> datetime | None:
    value = header.get("Date")
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- Maildir ---------------------------------------------------------------------------

_MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                  "S": "\\Seen", "T": "\\Deleted"}
_SUBDIRS = ("cur", "new", "tmp")


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


class MaildirSource(_FileSource):
    kind = "maildir"

    def __init__(self, root: Path, *, max_bytes: int, batch: int) -> None:
        super().__init__([root], max_bytes, batch)
        self._root = self._paths[0]

    async def folders(self) -> list[SourceFolder]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[SourceFolder]:
        if not self._root.is_dir():
            raise SourceError(f"no Maildir at {self._root}")
        found: list[tuple[list[str], Path]] = []
        if _is_maildir(self._root):
            found.append((["INBOX"], self._root))
        self._walk(self._root, [], found)
        if not found:
            raise SourceError(f"no Maildir folder (cur/, new/) under {self._root}")
        folders = []
        for path, directory in found:
            target = target_folder(path)
            assert target is not None  # noqa: S101 - no attributes: never virtual
            count = sum(1 for _ in _message_files(directory))
            folders.append(
                SourceFolder("/".join(path), "/".join(path), target, 1, count, str(directory))
            )
        return folders

    def _walk(self, directory: Path, above: list[str], found: list[tuple[list[str], Path]]) -> None:
        for entry in sorted(directory.iterdir()):
            if not entry.is_dir() or entry.name in _SUBDIRS:
                continue
            try:
                if not above and entry.name.startswith(".") and len(entry.name) > 1:
                    # Maildir++: ".A.B" is folder B below A; names in modified UTF-7.
                    path = [decode_mutf7(part) for part in entry.name[1:].split(".")]
                    if _is_maildir(entry):
                        found.append((path, entry))
                    continue
                path = [*above, decode_mutf7(entry.name)]
            except FolderNameError:
                raise SourceError(f"folder name {entry.name!r} is not modified UTF-7") from None
            if _is_maildir(entry):  # LAYOUT=fs: a folder is a directory, sub-folders inside
                found.append((path, entry))
            self._walk(entry, path, found)

    def read(
        self, folder: SourceFolder, after_uid: int
    ) -> AsyncGenerator[list[SourceMessage], None]:
        return _batches(self._messages(Path(folder.location), after_uid), self._batch)

    def _messages(self, directory: Path, after_uid: int) -> Iterator[SourceMessage]:
        keywords = _dovecot_keywords(directory)
        for uid, path in enumerate(_message_files(directory), start=1):
            if uid <= after_uid:
                continue
            try:
                stat = path.stat()
                when = datetime.fromtimestamp(stat.st_mtime, UTC)
                flags = _maildir_flags(path.name, keywords)
                if stat.st_size > self._max_bytes:
                    yield SourceMessage(uid, None, flags, when, stat.st_size,
                                        OVERSIZE)
                    continue
                data = path.read_bytes()
            except OSError as e:
                yield SourceMessage(uid, None, (), datetime.now(UTC), 0,
                                    f"cannot read: {e.strerror}")
                continue
            yield SourceMessage(uid, data, flags, when, len(data))


def _message_files(directory: Path) -> Iterator[Path]:
    """cur/ and new/ files in name order (Dovecot's names begin with the delivery time)."""
    names = []
    for sub in ("cur", "new"):
        with os.scandir(directory / sub) as entries:
            names += [(entry.name, sub) for entry in entries if entry.is_file()
                      and not entry.name.startswith(".")]
    for name, sub in sorted(names):
        yield directory / sub / name


def _dovecot_keywords(directory: Path) -> dict[str, str]:
    """Dovecot's keyword letters: line "N keyword" of dovecot-keywords is letter a+N."""
    try:
        lines = (directory / "dovecot-keywords").read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    letters = {}
    for line in lines:
        number, _, keyword = line.partition(" ")
        if number.isdigit() and int(number) < 26 and _atom(keyword):
            letters[chr(ord("a") + int(number))] = keyword
    return letters


def _maildir_flags(name: str, keywords: dict[str, str]) -> tuple[str, ...]:
    _, sep, info = name.rpartition(":2,")
    if not sep:
        return ()
    flags = {_MAILDIR_FLAGS.get(ch) or keywords.get(ch) for ch in info}
    return tuple(sorted(flag for flag in flags if flag))
