"""What the IMAP server needs from storage, as Protocols (no implementation here).

The IMAP layers (`wire`, `state`, `server`) depend only on these; the SQLModel store
(`gateway.store.mailbox`) implements them. Calls are synchronous and fast (local
SQLite); `login` is slow (Argon2id) and the server runs it in an executor.

One function belongs to the contract: `header_block`, which says exactly which octets
`MailSession.fetch_headers` returns, so that every store cuts a message the same way
and BODY[HEADER] is the same whether it came from the header alone or the whole message
(`header_end` makes the same cut as an index, for parts inside a message).

Errors the store raises for the IMAP layer to render (a store turns its own errors, and
its database's, into these; the session goes on after each):

    BackendError                 -> NO [SERVERBUG]
    ├── MailboxNotFound          -> NO [NONEXISTENT]
    ├── AuthenticationFailed     -> NO [AUTHENTICATIONFAILED]
    ├── StorageUnavailable       -> NO [UNAVAILABLE]  locked, unreachable, out of space:
    │                                                  the same command may work later
    └── StorageFailed            -> NO [SERVERBUG]    broken schema, corrupt file, a bug:
                                                       retrying will not help
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bridge.headers import parse_header


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
    """A folder's state at one moment, messages in UID order."""

    name: str
    uid_validity: int
    uid_next: int
    highest_modseq: int
    messages: tuple[MessageMeta, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class StoredMessage:
    meta: MessageMeta
    body: bytes  # the full RFC 5322 message, CRLF line ends, decrypted in memory only


@dataclass(frozen=True)
class StoredHeader:
    uid: int
    header: bytes  # `header_block` of the message, decrypted in memory only


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
    return parse_header(message, limit=None, start=start, stop=end).end


class MailSession(Protocol):
    """One logged-in account. Closed on LOGOUT or connection loss."""

    @property
    def address(self) -> str: ...

    def list_folders(self) -> Sequence[FolderInfo]: ...

    def snapshot(self, folder: str) -> FolderSnapshot:
        """Current state of a folder; raises MailboxNotFound."""
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
        self, folder: str, uids: Sequence[int], flags: frozenset[str], mode: FlagMode
    ) -> Sequence[MessageMeta]:
        """Change flags; returns the new metadata of every message that exists."""
        ...

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> Sequence[int]:
        """Remove messages flagged \\Deleted (only those in `uids` if given); returns their UIDs."""
        ...

    def close(self) -> None: ...


class Authenticator(Protocol):
    def login(self, username: str, password: str) -> MailSession:
        """Unlock the account; raises AuthenticationFailed (wrong user or password alike)."""
        ...
