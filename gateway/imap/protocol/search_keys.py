"""SEARCH keys as the parser produces them (RFC 3501 section 6.4.4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

from gateway.imap.protocol.sequence import SequenceSet


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """SEEN / UNSEEN / ... / KEYWORD x / UNKEYWORD x."""

    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class SearchRecent:
    """RECENT (present) / OLD (absent): \\Recent as this session holds it."""

    present: bool


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A sequence set (message numbers) or `UID set`."""

    sequence_set: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class SearchSize:
    larger: bool
    size: int


class DateField(enum.Enum):
    INTERNAL = "internal"  # BEFORE / ON / SINCE
    SENT = "sent"  # SENTBEFORE / SENTON / SENTSINCE (the Date: header)


class DateRelation(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class SearchDate:
    field: DateField
    relation: DateRelation
    day: date


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name value; FROM/TO/CC/BCC/SUBJECT are HEADER with that name."""

    name: str
    value: bytes


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY value (with_headers False) or TEXT value (with_headers True)."""

    value: bytes
    with_headers: bool


@dataclass(frozen=True, slots=True)
class SearchModseq:
    """MODSEQ [entry-name entry-type] n (RFC 7162 section 3.1.5): modseq at least n. The
    entry names a flag's own modseq; this server keeps one per message, which stands for
    every entry."""

    modseq: int


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchRecent
    | SearchSet
    | SearchSize
    | SearchDate
    | SearchHeader
    | SearchText
    | SearchModseq
    | SearchNot
    | SearchOr
    | SearchAnd
)
