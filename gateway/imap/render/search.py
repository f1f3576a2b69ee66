"""SEARCH keys evaluated against messages of the selected mailbox.

Holds `compile_search` (a parsed `SearchKey` plus its CHARSET to a predicate) and
`Candidate` (one message: its number, metadata and, when a key looks inside, its parsed
content). Pure functions over data in memory: it never calls storage (the state layer
fetches, in batches, what `needs_content` says the key reads: nothing, the header blocks,
or whole messages).
"""

from __future__ import annotations

import email.utils
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cached_property

from bridge.headers import decoded_text as decode_words
from gateway.imap.backend import MessageMeta
from gateway.imap.protocol import (
    Code,
    CommandFailed,
    Content,
    DateField,
    DateRelation,
    Raw,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModseq,
    SearchNot,
    SearchOr,
    SearchRecent,
    SearchSet,
    SearchSize,
    SearchText,
    Status,
)
from gateway.imap.render.addresses import normalized
from gateway.imap.render.fetch import HeaderBlock, MimePart, decoded_text, header_text

CHARSETS = ("US-ASCII", "UTF-8")
# Searched as written and as `addresses.normalized` writes them (comments dropped, names
# from comments, groups spelled out), as Dovecot searches address fields.
_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})


class Candidate:
    """One message as SEARCH sees it; decoded text is worked out once, on first use.

    `message` is the parsed message, or only its header block when the key reads no body
    (`needs_content` gave Content.HEADER), or None when it reads neither."""

    def __init__(
        self, number: int, meta: MessageMeta, message: MimePart | HeaderBlock | None = None
    ) -> None:
        self.number = number
        self.meta = meta
        self.message = message

    @cached_property
    def lower_flags(self) -> frozenset[str]:
        return frozenset(f.lower() for f in self.meta.flags)

    @cached_property
    def body_text(self) -> str:
        message = self.message
        return decoded_text(message).casefold() if isinstance(message, MimePart) else ""

    @cached_property
    def header_text(self) -> str:
        return header_text(self.message).casefold() if self.message else ""

    @cached_property
    def sent_date(self) -> date | None:
        value = self.message.field("date") if self.message else None
        parsed = email.utils.parsedate_tz(value) if value else None
        if parsed is None:
            return None
        try:
            return date(parsed[0], parsed[1], parsed[2])
        except ValueError:
            return None


Predicate = Callable[[Candidate], bool]


@dataclass(frozen=True, slots=True)
class Scope:
    """What `*` means while searching: the highest message number and the highest UID."""

    last_number: int
    last_uid: int


def needs_content(key: SearchKey) -> Content:
    """What of a message evaluating `key` reads: only metadata (Content.NONE), the header
    block (HEADER, SENTBEFORE/ON/SINCE) or the whole message (BODY, TEXT)."""
    if isinstance(key, SearchText):
        return Content.FULL
    if isinstance(key, SearchHeader):
        return Content.HEADER
    if isinstance(key, SearchDate):
        return Content.HEADER if key.field is DateField.SENT else Content.NONE
    if isinstance(key, SearchNot):
        return needs_content(key.key)
    if isinstance(key, SearchOr):
        return max(needs_content(key.left), needs_content(key.right))
    if isinstance(key, SearchAnd):
        return max((needs_content(k) for k in key.keys), default=Content.NONE)
    return Content.NONE


def uses_modseq(key: SearchKey) -> bool:
    """Whether `key` holds a MODSEQ key (the SEARCH answer then ends with `(MODSEQ n)`)."""
    if isinstance(key, SearchModseq):
        return True
    if isinstance(key, SearchNot):
        return uses_modseq(key.key)
    if isinstance(key, SearchOr):
        return uses_modseq(key.left) or uses_modseq(key.right)
    if isinstance(key, SearchAnd):
        return any(uses_modseq(k) for k in key.keys)
    return False


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode("ascii" if charset == "US-ASCII" else "utf-8").casefold()
    except UnicodeDecodeError as exc:
        raise CommandFailed(Status.BAD, f"Search string is not {charset}") from exc


def _in_set(intervals: list[tuple[int, int]]) -> Callable[[int], bool]:
    starts = [lo for lo, _ in intervals]

    def contains(n: int) -> bool:
        i = bisect_right(starts, n) - 1
        return i >= 0 and n <= intervals[i][1]

    return contains


def _compare(relation: DateRelation, day: date) -> Callable[[date], bool]:
    if relation is DateRelation.BEFORE:
        return lambda d: d < day
    if relation is DateRelation.ON:
        return lambda d: d == day
    return lambda d: d >= day


def compile_search(key: SearchKey, charset: str | None, scope: Scope) -> Predicate:
    """A predicate for `key`; raises CommandFailed for an unsupported CHARSET."""
    charset = (charset or "US-ASCII").upper()
    if charset not in CHARSETS:
        raise CommandFailed(
            Status.NO, "Unsupported charset.", Code("BADCHARSET", (tuple(map(Raw.of, CHARSETS)),))
        )
    return _compile(key, charset, scope)


def _compile(key: SearchKey, charset: str, scope: Scope) -> Predicate:
    if isinstance(key, SearchAll):
        return lambda c: True
    if isinstance(key, SearchFlag):
        flag, present = key.flag.lower(), key.present
        return lambda c: (flag in c.lower_flags) == present
    if isinstance(key, SearchRecent):
        recent = key.present  # the candidate's flags hold \Recent when it is, for this session
        return lambda c: ("\\recent" in c.lower_flags) == recent
    if isinstance(key, SearchSet):
        if key.uid:
            has_uid = _in_set(key.sequence_set.intervals(scope.last_uid))
            return lambda c: has_uid(c.meta.uid)
        has_number = _in_set(key.sequence_set.intervals(scope.last_number))
        return lambda c: has_number(c.number)
    if isinstance(key, SearchModseq):
        modseq = key.modseq
        return lambda c: c.meta.modseq >= modseq
    if isinstance(key, SearchSize):
        size, larger = key.size, key.larger
        return lambda c: c.meta.size > size if larger else c.meta.size < size
    if isinstance(key, SearchDate):
        test = _compare(key.relation, key.day)
        if key.field is DateField.INTERNAL:
            return lambda c: test(c.meta.internal_date.date())

        def sent(c: Candidate) -> bool:
            day = c.sent_date
            return day is not None and test(day)

        return sent
    if isinstance(key, SearchHeader):
        name, needle = key.name.lower(), _decode(key.value, charset)

        address = name in _ADDRESS_FIELDS

        def header(c: Candidate) -> bool:
            if c.message is None:
                return False
            for field_name, raw in c.message.fields:
                if field_name == name:
                    text = raw.split(b":", 1)[1].decode("utf-8", "surrogateescape")
                    value = " ".join(text.split())
                    if needle in decode_words(value).casefold():
                        return True
                    if address and needle in decode_words(normalized(value)).casefold():
                        return True
            return False

        return header
    if isinstance(key, SearchText):
        needle, with_headers = _decode(key.value, charset), key.with_headers
        return lambda c: needle in c.body_text or (with_headers and needle in c.header_text)
    if isinstance(key, SearchNot):
        inner = _compile(key.key, charset, scope)
        return lambda c: not inner(c)
    if isinstance(key, SearchOr):
        left, right = _compile(key.left, charset, scope), _compile(key.right, charset, scope)
        return lambda c: left(c) or right(c)
    parts = [_compile(k, charset, scope) for k in key.keys]
    return lambda c: all(p(c) for p in parts)
