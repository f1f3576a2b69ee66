"""What the framing layer hands up: events (need data, closed, literal go-ahead,
continuation line) and one typed event per command.

`StoreMode` is the protocol's own word for FLAGS / +FLAGS / -FLAGS; the session maps it
to storage. Pure: imports nothing from `gateway` outside this package.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.imap.protocol.fetch_items import FetchAttribute
from gateway.imap.protocol.search_keys import SearchKey
from gateway.imap.protocol.sequence import SequenceSet


class StoreMode(enum.Enum):
    REPLACE = "replace"  # FLAGS
    ADD = "add"  # +FLAGS
    REMOVE = "remove"  # -FLAGS


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing complete yet: call `receive_data`."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side; any partial command is dropped."""


@dataclass(frozen=True, slots=True)
class LiteralContinuation:
    """The client waits for `+` before sending a synchronizing literal: send a Continuation."""

    tag: str
    command: str


@dataclass(frozen=True, slots=True)
class ContinuationLine:
    """The line the client sent after the server's `+` (a SASL response, later IDLE's DONE)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Command:
    tag: str


@dataclass(frozen=True, slots=True)
class Capability(Command):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Logout(Command):
    pass


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    pass


@dataclass(frozen=True, slots=True)
class Login(Command):
    userid: str
    password: str

    def __repr__(self) -> str:
        return f"Login(tag={self.tag!r}, userid=..., password=...)"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    mechanism: str  # upper case
    initial_response: bytes | None  # SASL-IR, base64-decoded; b"" for "="

    def __repr__(self) -> str:
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, ...)"


@dataclass(frozen=True, slots=True)
class Id(Command):
    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]  # upper case


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    pass


@dataclass(frozen=True, slots=True)
class Qresync:
    """SELECT's `(QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]))` (RFC 7162
    section 3.2.5): what the client knew when it last saw the mailbox."""

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None = None  # never holds `*`
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (numbers, their UIDs)


@dataclass(frozen=True, slots=True)
class Select(Command):
    mailbox: str
    condstore: bool = False  # the CONDSTORE select parameter (RFC 7162 section 3.1.8)
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Examine(Command):
    mailbox: str
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class List(Command):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class ListExtended(Command):
    """LIST with selection options, several patterns or return options (RFC 5258), the
    options upper case. `status_items` is RETURN (STATUS (...)) (RFC 5819), None without."""

    reference: str
    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    """GETQUOTA (RFC 9208)."""

    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    root: str
    limits: tuple[tuple[str, int], ...]  # resource names upper case


@dataclass(frozen=True, slots=True)
class StatusCommand(Command):
    mailbox: str
    items: tuple[str, ...]  # upper case


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime | None  # timezone-aware; None: now
    message: bytes
    binary: bool = False  # sent as a literal8 (RFC 3516): it may hold NUL

    def __repr__(self) -> str:
        return f"Append(tag={self.tag!r}, mailbox=..., {len(self.message)} octets)"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    """IDLE (RFC 2177): the server pushes changes until the client sends DONE."""


@dataclass(frozen=True, slots=True)
class Check(Command):
    pass


@dataclass(frozen=True, slots=True)
class Close(Command):
    pass


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    pass


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    uids: SequenceSet | None = None  # UID EXPUNGE (UIDPLUS) when given


@dataclass(frozen=True, slots=True)
class Search(Command):
    key: SearchKey
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None  # SEARCH RETURN (...) (RFC 4731), upper case


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None  # CHANGEDSINCE modifier (RFC 7162 section 3.1.4)
    vanished: bool = False  # VANISHED modifier of UID FETCH (section 3.2.6)


@dataclass(frozen=True, slots=True)
class Store(Command):
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchanged_since: int | None = None  # UNCHANGEDSINCE modifier (RFC 7162 section 3.1.3)


@dataclass(frozen=True, slots=True)
class Copy(Command):
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move(Command):
    """MOVE (RFC 6851)."""

    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


Event = NeedData | ConnectionClosed | LiteralContinuation | ContinuationLine | Command
