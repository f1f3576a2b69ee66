"""The mail operations beyond reading and flagging: APPEND, COPY, MOVE, folders, subscriptions.

This module holds only their contract: the result types, the errors they raise toward
the IMAP layer and `MailOperations`, the Protocol a mail session implements beside
`gateway.imap.backend.MailSession`. It imports nothing from the store, so the IMAP layer
can take it as it is. The SQL store implements it in `gateway.store.append`,
`gateway.store.transfer` and `gateway.store.folders` (through `StoreSession`), the
test store in `tests/imap_memory_backend.py`.

Every operation is synchronous and runs in its own database transaction, so it may be
called from a worker thread. Folder names are as IMAP sees them once modified UTF-7 is
decoded; the hierarchy separator is "/" and "INBOX" is case-insensitive.

Errors (all `BackendError`s, each naming the response code of the tagged NO):

    BackendError
    ├── MailboxNotFound            NONEXISTENT  (gateway.imap.backend)
    │   └── TryCreate              TRYCREATE    APPEND/COPY/MOVE into a missing folder
    ├── FolderExists               ALREADYEXISTS
    ├── FolderHasChildren          HASCHILDREN  DELETE of a \\Noselect name with inferiors
    ├── CannotDoThat               CANNOT       DELETE INBOX, RENAME into itself, MOVE to
    │                                           the same folder, a name the store cannot hold
    └── MessageTooLarge            TOOBIG       APPEND over the store's size limit
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.imap.backend import BackendError, MailboxNotFound, StoredHeader

HIERARCHY_SEPARATOR = "/"


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


@dataclass(frozen=True)
class ParsedHeader(StoredHeader):
    """A header block with its fields already split, as `MailSession.fetch_headers` may
    return it (the SQL store does for every header its cache holds).

    `fields` is exactly `bridge.headers.parse_header(header, limit=None).fields` as
    (lower-case name, raw octets) pairs, so FETCH can cut HEADER.FIELDS and build
    ENVELOPE without parsing the header again.
    """

    fields: tuple[tuple[str, bytes], ...]


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


class MailOperations(Protocol):
    """What a mail session offers for writing mail and folders (beside `MailSession`)."""

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
