"""What the IMAP server needs from storage, as Protocols, and the change notifier stores
share.

The IMAP layers (`session`, `render`, `server`) depend only on these; the SQLModel store
(`gateway.store.mailbox`) implements them. The storage calls are synchronous and may
block (a held SQLite write lock, a slow PostgreSQL): the server never makes them on its
event loop but in its own bounded thread pool (`gateway.imap.server`), one call at a
time per connection. `login` is slow (Argon2id) and runs in the login gate's pool.

Change reporting costs O(changes): a session keeps its view of the selected folder and
asks `changes_since(folder, modseq)` what happened after the last modseq it reported
(new messages and flag changes, expunged UIDs), never re-reading the folder.
`wait_for_change` is the one coroutine: it waits on the `ChangeNotifier` a store signals
after each commit that changes a folder, and touches no database (IDLE is built on it).

The writing half of the contract (APPEND, COPY/MOVE with their COPYUID results, CREATE,
DELETE, RENAME, subscriptions) is on `MailSession` too; each call runs in its own
database transaction and signals the notifier after its commit, so other sessions see it.
Folder names are as IMAP sees them once modified UTF-7 is decoded; the hierarchy
separator is "/" and "INBOX" is case-insensitive.

One function belongs to the contract: `header_block`, which says exactly which octets
`MailSession.fetch_headers` returns, so that every store cuts a message the same way
and BODY[HEADER] is the same whether it came from the header alone or the whole message
(`header_end` makes the same cut as an index, for parts inside a message).

Errors the store raises for the IMAP layer to render (a store turns its own errors, and
its database's, into these; the session goes on after each):

    BackendError                 -> NO [SERVERBUG]
    ├── MailboxNotFound          -> NO [NONEXISTENT]
    │   └── TryCreate            -> NO [TRYCREATE]   APPEND/COPY/MOVE into a missing folder
    ├── FolderExists             -> NO [ALREADYEXISTS]
    ├── FolderHasChildren        -> NO [HASCHILDREN]  DELETE of a \\Noselect name with inferiors
    ├── CannotDoThat             -> NO [CANNOT]      DELETE INBOX, RENAME into itself, MOVE to
    │                                                  the same folder, a name the store cannot hold
    ├── MessageTooLarge          -> NO [TOOBIG]      APPEND over the store's size limit
    ├── AuthenticationFailed     -> NO [AUTHENTICATIONFAILED]
    ├── StorageUnavailable       -> NO [UNAVAILABLE]  locked, unreachable, out of space:
    │                                                  the same command may work later
    └── StorageFailed            -> NO [SERVERBUG]    broken schema, corrupt file, a bug:
                                                       retrying will not help
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from typing import Protocol

from bridge.headers import block_end


class BackendError(Exception):
    """Root of the errors storage raises toward the IMAP layer; `code` is the response
    code of the tagged NO it becomes."""

    code = "SERVERBUG"


class MailboxNotFound(BackendError):
    code = "NONEXISTENT"

    def __init__(self, name: str) -> None:
        super().__init__("no such mailbox")
        self.name = name


class AuthenticationFailed(BackendError):
    code = "AUTHENTICATIONFAILED"

    def __init__(self) -> None:
        super().__init__("authentication failed")


class StorageUnavailable(BackendError):
    """The store cannot answer now (database locked, unreachable, out of space)."""

    code = "UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the mail store is unavailable")


class StorageFailed(BackendError):
    """The store failed in a way retrying will not mend."""

    def __init__(self) -> None:
        super().__init__("the mail store failed")


class FlagMode(enum.Enum):
    REPLACE = "replace"  # FLAGS
    ADD = "add"  # +FLAGS
    REMOVE = "remove"  # -FLAGS


@dataclass(frozen=True)
class FolderInfo:
    name: str  # e.g. "INBOX", "Sent"; hierarchy delimiter is "/"
    attributes: tuple[str, ...] = ()  # e.g. ("\\HasNoChildren", "\\Sent")


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    flags: frozenset[str]  # system flags with backslash ("\\Seen"), keywords without
    internal_date: datetime  # timezone-aware
    size: int  # RFC822.SIZE: octets of the full message
    modseq: int


@dataclass(frozen=True)
class FolderSnapshot:
    """A folder's state at one moment, messages in UID order. Messages from
    `first_recent_uid` on are \\Recent: no session has selected the folder read-write
    since they arrived (`MailSession.claim_recent`)."""

    name: str
    uid_validity: int
    uid_next: int
    highest_modseq: int
    first_recent_uid: int
    messages: tuple[MessageMeta, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FolderChanges:
    """What changed in a folder after a modseq, up to `highest_modseq`.

    `changed` holds, in UID order, the current metadata of every message whose modseq is
    above the one asked about: new messages and messages whose flags changed. `expunged`
    holds the UIDs removed since, ascending (a message that came and went in between may
    be among them)."""

    uid_validity: int
    uid_next: int
    highest_modseq: int
    changed: tuple[MessageMeta, ...] = ()
    expunged: tuple[int, ...] = ()


@dataclass(frozen=True)
class StoredMessage:
    meta: MessageMeta
    body: bytes  # the full RFC 5322 message, CRLF line ends, decrypted in memory only


@dataclass(frozen=True)
class StoredHeader:
    uid: int
    header: bytes  # `header_block` of the message, decrypted in memory only


class TryCreate(MailboxNotFound):
    """The destination of APPEND, COPY or MOVE does not exist (RFC 3501 6.3.11, 6.4.7)."""

    code = "TRYCREATE"


class FolderExists(BackendError):
    code = "ALREADYEXISTS"

    def __init__(self) -> None:
        super().__init__("mailbox already exists")


class FolderHasChildren(BackendError):
    """DELETE of a name that is only a superior of other folders (\\Noselect)."""

    code = "HASCHILDREN"

    def __init__(self) -> None:
        super().__init__("mailbox has inferior mailboxes; delete them first")


class CannotDoThat(BackendError):
    """A well-formed request the store refuses; the message says which rule, in words a
    user can read (it never holds a folder name)."""

    code = "CANNOT"


class MessageTooLarge(BackendError):
    code = "TOOBIG"

    def __init__(self, limit: int) -> None:
        super().__init__(f"message is larger than {limit} octets")
        self.limit = limit


# Of a FieldTable's fields with some names, the runs of adjacent ones within a header:
# the index of each run's first field, and where each run starts and ends.
_Runs = tuple[list[int], list[int], list[int]]
_RUNS_KEPT = 8  # distinct name sets a table keeps the runs of


@dataclass(frozen=True)
class FieldTable:
    """The fields of many headers (a store's cache block of them), as offsets: field i
    is `header[starts[i] : ends[i]]` of the header it belongs to, called
    `names[numbers[i]]`; `firsts` holds the index of each header's first field. Shared,
    so that splitting a run of headers makes no object per field."""

    names: tuple[str, ...]  # lower-case field names
    starts: Sequence[int]
    ends: Sequence[int]
    numbers: Sequence[int]
    firsts: Sequence[int]
    _runs: dict[frozenset[int], _Runs] = field(default_factory=dict, compare=False, repr=False)

    def runs(self, numbers: frozenset[int]) -> _Runs:
        """The fields whose name numbers are in `numbers`, adjacent ones of one header
        joined into one run, found once per set of names for all the headers: a header
        sync cuts the same few fields, often neighbours, from each of its headers."""
        runs = self._runs.get(numbers)
        if runs is not None:
            return runs
        starts, ends, headers_from = self.starts, self.ends, frozenset(self.firsts)
        run_firsts: list[int] = []
        run_starts: list[int] = []
        run_ends: list[int] = []
        last = -2
        for i in compress(range(len(self.numbers)), map(numbers.__contains__, self.numbers)):
            if i == last + 1 and i not in headers_from and starts[i] == run_ends[-1]:
                run_ends[-1] = ends[i]
            else:
                run_firsts.append(i)
                run_starts.append(starts[i])
                run_ends.append(ends[i])
            last = i
        runs = (run_firsts, run_starts, run_ends)
        if len(self._runs) < _RUNS_KEPT:
            self._runs[numbers] = runs
        return runs


@dataclass(frozen=True)
class ParsedHeader(StoredHeader):
    """A header block with its fields already split, as `MailSession.fetch_headers` may
    return it (the SQL store does for every header its cache holds).

    The fields are those of `bridge.headers.parse_header(header, limit=None).fields`,
    fields `first` to `last` (excluded) of `table`, in order. `fields` gives them as
    (name, raw octets) pairs, so FETCH can build ENVELOPE without parsing the header
    again; `cut` takes a few of them (HEADER.FIELDS) without making the others.
    """

    table: FieldTable
    first: int
    last: int

    @classmethod
    def of(cls, uid: int, header: bytes, table: FieldTable, first: int, last: int
           ) -> ParsedHeader:
        """`ParsedHeader(uid, header, table, first, last)`, made without the frozen
        dataclass's `object.__setattr__` per field, which cost more than the rest of
        opening a cached header (a header sync makes one per message)."""
        made = object.__new__(cls)
        made.__dict__.update(uid=uid, header=header, table=table, first=first, last=last)
        return made

    @property
    def names(self) -> tuple[str, ...]:
        return self.table.names

    @property
    def fields(self) -> tuple[tuple[str, bytes], ...]:
        header, table = self.header, self.table
        names, starts, ends, numbers = table.names, table.starts, table.ends, table.numbers
        return tuple([
            (names[numbers[i]], header[starts[i] : ends[i]]) for i in range(self.first, self.last)
        ])

    def cut(self, numbers: frozenset[int]) -> bytes:
        """The octets of the fields whose name numbers are in `numbers`, in order."""
        firsts, starts, ends = self.table.runs(numbers)
        low = bisect_left(firsts, self.first)
        high = bisect_left(firsts, self.last, low)
        header = self.header
        if high - low == 1:
            return header[starts[low] : ends[low]]
        return b"".join([header[starts[k] : ends[k]] for k in range(low, high)])


@dataclass(frozen=True)
class Usage:
    """What an account holds in all its folders: messages, and their octets (the sum of
    their RFC822.SIZEs). QUOTA (RFC 9208) reports it."""

    messages: int
    octets: int


@dataclass(frozen=True)
class AppendResult:
    """Where APPEND put the message: APPENDUID (RFC 4315) is `uid_validity uid`."""

    uid_validity: int
    uid: int


@dataclass(frozen=True)
class CopyResult:
    """What COPY or MOVE did: COPYUID (RFC 4315) is `uid_validity` and the two UID sets.

    `uids` pairs each source UID copied with its new UID in the destination, in ascending
    source UID order; UIDs that did not exist in the source are absent (an empty result
    means nothing was copied, and COPYUID is not sent).
    """

    uid_validity: int
    uids: tuple[tuple[int, int], ...]

    @property
    def source_uids(self) -> tuple[int, ...]:
        return tuple(source for source, _ in self.uids)

    @property
    def destination_uids(self) -> tuple[int, ...]:
        return tuple(destination for _, destination in self.uids)


def header_block(message: bytes) -> bytes:
    """The message's header block as `bridge.headers.parse_header` reads it (RFC 5322
    section 2.1), with the empty line that ends it when there is one.

    A message that starts with an empty line has the header block CRLF; one without an
    empty line is all header; a line that is neither a field nor a continuation ends the
    header block (it is body). No size limit: stored mail must always be readable.
    """
    return message[: header_end(message)]


def header_end(message: bytes, start: int = 0, end: int | None = None) -> int:
    """Where `header_block` of message[start:end] ends, as an index into `message` (so a
    part inside a message is cut without copying it)."""
    return block_end(message, start=start, stop=end)


class MailSession(Protocol):
    """One logged-in account. Closed on LOGOUT or connection loss."""

    @property
    def address(self) -> str: ...

    def list_folders(self) -> Sequence[FolderInfo]: ...

    def snapshot(self, folder: str) -> FolderSnapshot:
        """Current state of a folder; raises MailboxNotFound."""
        ...

    def claim_recent(self, folder: str) -> range:
        """Take the folder's \\Recent messages for this session (SELECT; RFC 3501 2.3.2):
        the UIDs from its first recent UID up to its UID next, at once and for this session
        only; the first recent UID becomes that UID next. Other sessions see none of them
        as recent. Raises MailboxNotFound."""
        ...

    def peek_recent(self, folder: str) -> range:
        """The UIDs `claim_recent` would take now, left for the next read-write session
        (EXAMINE sees \\Recent and takes none, RFC 3501 6.3.2). Raises MailboxNotFound."""
        ...

    def changes_since(self, folder: str, modseq: int) -> FolderChanges:
        """What changed in the folder after `modseq` (see `FolderChanges`), read in one
        consistent snapshot, at a cost that grows with the changes, not the folder;
        raises MailboxNotFound."""
        ...

    async def wait_for_change(self, folder: str, modseq: int, timeout: float) -> bool:
        """True as soon as a commit in this process took the folder past `modseq`
        (at once if one already did), False after `timeout` seconds. Runs on the event
        loop and never touches the database; commits by other processes are seen only
        by the next `changes_since`."""
        ...

    def fetch(self, folder: str, uids: Sequence[int]) -> Sequence[StoredMessage]:
        """Decrypted messages for these UIDs (missing UIDs are skipped), in UID order."""
        ...

    def fetch_headers(self, folder: str, uids: Sequence[int]) -> Sequence[StoredHeader]:
        """Only the header blocks (`header_block`) of these messages, by UID (the metadata
        is the snapshot's): missing UIDs skipped, UID order. For FETCH and SEARCH items
        that read no body."""
        ...

    def store_flags(
        self,
        folder: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Sequence[MessageMeta]:
        """Change flags; returns the new metadata of every message that exists. With
        `unchanged_since` (STORE UNCHANGEDSINCE, RFC 7162 section 3.1.3) a message whose
        modseq is above it is left alone and out of the result, decided in the same
        transaction as the change."""
        ...

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> Sequence[int]:
        """Remove messages flagged \\Deleted (only those in `uids` if given); returns their UIDs."""
        ...

    def append(
        self,
        folder: str,
        message: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        """Store `message` in `folder` with these flags and keywords (`\\Recent` is dropped)
        and this INTERNALDATE (timezone-aware; None: now). The SQL store seals it before
        anything is written. Raises TryCreate, MessageTooLarge, CannotDoThat (empty
        message)."""
        ...

    def copy(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        """Copy these messages (missing UIDs skipped) with their flags, keywords and
        internal dates into `destination`, which may be `source`. Raises MailboxNotFound
        (source), TryCreate (destination)."""
        ...

    def move(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        """COPY and expunge from `source` in one transaction (RFC 6851): the source UIDs of
        the result are the ones expunged. Raises what `copy` raises, and CannotDoThat
        when `destination` is `source`."""
        ...

    def create_folder(self, name: str) -> None:
        """CREATE (RFC 3501 6.3.3): a trailing "/" is dropped; superiors that do not exist
        are not created but listed as \\Noselect; a name created again after a DELETE gets
        a greater UIDVALIDITY. Raises FolderExists (INBOX included), CannotDoThat."""
        ...

    def delete_folder(self, name: str) -> None:
        """DELETE (6.3.4): the folder and its messages go; its inferiors stay, and while
        there are any its name is listed as \\Noselect. Subscriptions stay. Raises
        CannotDoThat (INBOX), FolderHasChildren (a \\Noselect name), MailboxNotFound."""
        ...

    def rename_folder(self, old: str, new: str) -> None:
        """RENAME (6.3.5): the folder and its inferiors take the new name (subscriptions
        follow), each with a new UIDVALIDITY and its UIDs kept. Renaming INBOX moves its
        messages into a new folder `new` and leaves INBOX empty, its inferiors in place.
        Superiors of `new` are not created. Raises MailboxNotFound, FolderExists,
        CannotDoThat (a name into itself)."""
        ...

    def subscribe(self, name: str) -> None:
        """SUBSCRIBE (6.3.6): persistent; the name need not exist. Subscribing twice is
        not an error."""
        ...

    def unsubscribe(self, name: str) -> None:
        """UNSUBSCRIBE (6.3.7). Raises CannotDoThat if the name was not subscribed."""
        ...

    def list_subscribed(self) -> Sequence[str]:
        """The subscribed names, existing or not, sorted (LSUB, LIST (SUBSCRIBED))."""
        ...

    def usage(self) -> Usage:
        """The account's messages and octets over all its folders, read in one query."""
        ...

    def close(self) -> None: ...


class Authenticator(Protocol):
    def login(self, username: str, password: str) -> MailSession:
        """Unlock the account; raises AuthenticationFailed (wrong user or password alike)."""
        ...


class ChangeNotifier:
    """Tells waiting IMAP sessions that a folder changed, within one process.

    A store calls `changed(key, modseq)` after each commit that changes a folder (new
    mail, flags, expunges), from whatever thread committed; `wait(key, after, timeout)`
    returns True once a commit with a modseq above `after` was signalled for `key`. The
    latest modseq per key is kept, so a commit between a session's last read and its
    `wait` is never missed. Keys are the store's own (e.g. account and folder name).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, set[Callable[[int], None]]] = {}

    def changed(self, key: Hashable, modseq: int) -> None:
        with self._lock:
            if modseq > self._latest.get(key, 0):
                self._latest[key] = modseq
            waiters = list(self._waiters.get(key, ()))
        for wake in waiters:
            wake(modseq)

    async def wait(self, key: Hashable, after: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake(modseq: int) -> None:
            if modseq > after:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(event.set)

        with self._lock:
            if self._latest.get(key, 0) > after:
                return True
            self._waiters.setdefault(key, set()).add(wake)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(wake)
                    if not waiters:
                        del self._waiters[key]
