"""FETCH responses written straight to octets, for the items of a client's header sync.

A first sync asks every message of a folder for a few metadata items and a header
section (`UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (...)]`); building wire `Value`s
for them and walking those in the generic serializer cost more than reading and opening
the headers. `direct_renderer` gives, for a FETCH whose items are all of that kind (UID,
FLAGS, INTERNALDATE, RFC822.SIZE, RFC822.HEADER, BODY[HEADER], BODY[HEADER.FIELDS (.NOT)],
any of the sections with a partial), a function that writes one message's response as
the octets `serialize` writes for the same items (`* n FETCH (...)` and its CRLF): names
and flag lists rendered once per command, numbers and the header literal per message,
the header cut from the fields the store split when it cached the header (`ParsedHeader`)
or split here. Any other FETCH gets None and goes through `FetchPlan`. Pure: no I/O,
nothing kept between commands.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import groupby, repeat
from typing import cast

from gateway.imap.backend import FieldTable, MessageMeta, ParsedHeader, StoredHeader
from gateway.imap.protocol import (
    RECENT,
    Content,
    FetchAttribute,
    FetchKind,
    Section,
    SectionText,
    encode_value,
    flag_list,
    literal,
)
from gateway.imap.render import fetch

# One item: its text with one %-placeholder (`UID %d`), what fills the placeholder for one
# message, and what fills it for many at once (the values of a column), if it has a way
# quicker than one call a message.
_Value = Callable[[MessageMeta, bool, "fetch.HeaderFields | None"], bytes | int]
_Column = Callable[
    [Sequence[MessageMeta], Sequence[bool], Sequence["fetch.HeaderFields | None"]],
    list[bytes] | list[int],
]
_Item = tuple[bytes, _Value, _Column | None]

FLAG_LISTS_KEPT = 256  # distinct flag lists a FETCH keeps rendered
_NAME_TUPLES_KEPT = 1024  # one a block of the store's header cache
_FIELD_TEXTS = (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT)
_UID = operator.attrgetter("uid")
_SIZE = operator.attrgetter("size")
_FLAGS = operator.attrgetter("flags")
_HEADER = operator.attrgetter("header")
_FIRST = operator.attrgetter("first")
_LAST = operator.attrgetter("last")
_LITERAL_WITH_END = b"{%d}\r\n%b\r\n"  # a cut of fields and the blank line after them


class DirectRenderer:
    """The octets writer of one FETCH's items: `line` for one message, `lines` for many.
    A message's line is one %-format of the whole response: no octets per item but the
    values themselves; `lines` works the values out column by column (an item's values
    for all the messages, by C-level maps where it can) and formats every line in one
    map."""

    def __init__(self, forms: Sequence[bytes], items: Sequence[_Item], reads_header: bool
                 ) -> None:
        self._line = b"* %d FETCH (" + b" ".join(forms) + b")\r\n"
        self._values = [value for _, value, _ in items]
        self._columns = [column for _, _, column in items]
        self._reads_header = reads_header

    def line(self, number: int, meta: MessageMeta, recent: bool, stored: StoredHeader | None
             ) -> bytes:
        head = _head(stored) if self._reads_header else None
        return self._line % (number, *[value(meta, recent, head) for value in self._values])

    def lines(self, numbers: Sequence[int], metas: Sequence[MessageMeta],
              recents: Sequence[bool], stored: Sequence[StoredHeader | None]) -> bytes:
        """`line` of each message, joined."""
        heads: Sequence[fetch.HeaderFields | None]
        if not self._reads_header:
            heads = [None] * len(numbers)
        elif all(map(isinstance, stored, repeat(ParsedHeader))):
            heads = cast(Sequence[ParsedHeader], stored)
        else:
            heads = [_head(header) for header in stored]
        columns = [
            column(metas, recents, heads) if column is not None
            else list(map(value, metas, recents, heads))
            for value, column in zip(self._values, self._columns, strict=True)
        ]
        return b"".join(map(self._line.__mod__, zip(numbers, *columns, strict=True)))


def direct_renderer(attributes: Sequence[FetchAttribute]) -> DirectRenderer | None:
    """The octets writer for these FETCH items, or None if one of them needs more than
    metadata and a header section."""
    forms: list[bytes] = []
    items: list[_Item] = []
    reads_header = False
    for attr in attributes:
        item = _item(attr)
        if item is None:
            return None
        reads_header = reads_header or attr.content is Content.HEADER
        forms.append(item[0])
        items.append(item)
    if not forms:
        return None
    return DirectRenderer(forms, items, reads_header)


def _head(stored: StoredHeader | None) -> fetch.HeaderFields:
    if stored is None:
        raise ValueError("header items without a header")
    return stored if isinstance(stored, ParsedHeader) else fetch.HeaderBlock.parse(stored.header)


def _item(attr: FetchAttribute) -> _Item | None:
    # A response name may quote a field name holding "%": it is text of the format.
    name = attr.response_name.encode("ascii").replace(b"%", b"%%")
    kind = attr.kind
    if kind is FetchKind.UID:
        return name + b" %d", lambda meta, _, __: meta.uid, lambda metas, _, __: [
            *map(_UID, metas)
        ]
    if kind is FetchKind.RFC822_SIZE:
        return name + b" %d", lambda meta, _, __: meta.size, lambda metas, _, __: [
            *map(_SIZE, metas)
        ]
    if kind is FetchKind.INTERNALDATE:
        return name + b" %b", lambda meta, _, __: encode_value(
            fetch.internal_date(meta.internal_date)
        ), None
    if kind is FetchKind.FLAGS:
        return name + b" %b", *_flags()
    if attr.content is not Content.HEADER or kind is FetchKind.ENVELOPE:
        return None
    if kind is FetchKind.RFC822_HEADER:
        return name + b" %b", lambda _, __, head: _literal(_header(head).header), None
    section = attr.section
    if section is None:
        return None
    partial = attr.partial
    cut = _FieldCut(section) if section.text in _FIELD_TEXTS else None

    def header_section(_: MessageMeta, __: bool, head: fetch.HeaderFields | None) -> bytes:
        if cut is not None and isinstance(head, ParsedHeader):
            octets = cut(head)
        else:
            octets = fetch.header_section(_header(head), section)
        if partial is not None:
            origin, length = partial
            octets = octets[origin : origin + length]
        return _literal(octets)

    if cut is None or partial is not None:
        return name + b" %b", header_section, None

    def header_sections(
        metas: Sequence[MessageMeta], recents: Sequence[bool],
        heads: Sequence[fetch.HeaderFields | None],
    ) -> list[bytes]:
        values: list[bytes] = []
        at = 0
        for table, group in groupby(map(getattr, heads, repeat("table"), repeat(None))):
            size = len(list(group))
            part = heads[at : at + size]
            if table is None:
                values += map(header_section, metas[at : at + size], recents[at : at + size],
                              part)
            else:
                values += cut.literals(table, cast(Sequence[ParsedHeader], part))
            at += size
        return values

    return name + b" %b", header_section, header_sections


class _FieldCut:
    """HEADER.FIELDS (.NOT) of store-split headers, as `fetch.header_section` cuts them,
    from the name numbers of each one's table (worked out once per distinct tuple of
    names; the fields picked once per table, `FieldTable.runs`)."""

    def __init__(self, section: Section) -> None:
        self._wanted = frozenset(name.lower() for name in section.fields)
        self._exclude = section.text is SectionText.HEADER_FIELDS_NOT
        self._numbers: dict[tuple[str, ...], frozenset[int]] = {}
        # The table last seen and its numbers: a block of the cache shares one table.
        self._last_table: FieldTable | None = None
        self._last_kept: frozenset[int] = frozenset()

    def _kept(self, table: FieldTable) -> frozenset[int]:
        if table is not self._last_table:
            names = table.names
            kept = self._numbers.get(names)
            if kept is None:
                kept = frozenset(i for i, name in enumerate(names)
                                 if name and (name in self._wanted) != self._exclude)
                if len(self._numbers) < _NAME_TUPLES_KEPT:
                    self._numbers[names] = kept
            self._last_table, self._last_kept = table, kept
        return self._last_kept

    def __call__(self, head: ParsedHeader) -> bytes:
        return head.cut(self._kept(head.table)) + b"\r\n"

    def literals(self, table: FieldTable, heads: Sequence[ParsedHeader]) -> list[bytes]:
        """The section of each of `heads` (all of `table`) as the literal FETCH sends:
        where each cut is one run of the table's fields, the cuts are sliced and the
        literals formatted by maps over the headers, no Python step per header."""
        kept = self._kept(table)
        firsts, starts, ends = table.runs(kept)
        lows = list(map(bisect_left, repeat(firsts), map(_FIRST, heads)))
        highs = map(bisect_left, repeat(firsts), map(_LAST, heads), lows)
        if not all(map((1).__eq__, map(operator.sub, highs, lows))):
            return [_literal(head.cut(kept) + b"\r\n") for head in heads]
        cuts = list(map(bytes.__getitem__, map(_HEADER, heads),
                        map(slice, map(starts.__getitem__, lows), map(ends.__getitem__, lows))))
        if any(map(bytes.__contains__, cuts, repeat(b"\0"))):
            return [_literal(octets + b"\r\n") for octets in cuts]
        return list(map(_LITERAL_WITH_END.__mod__,
                        zip(map(operator.add, map(len, cuts), repeat(2)), cuts, strict=True)))


def _flags() -> tuple[_Value, _Column]:
    """FLAGS as the client sees them: \\Recent added where the session shows it (it is
    never stored); for one message, and for many (each distinct list rendered once, then
    looked up by a map)."""
    rendered: dict[tuple[frozenset[str], bool], bytes] = {}

    def flags(meta: MessageMeta, recent: bool, _: fetch.HeaderFields | None) -> bytes:
        octets = rendered.get((meta.flags, recent))
        if octets is None:
            octets = encode_value(flag_list(meta.flags | {RECENT} if recent else meta.flags))
            if len(rendered) < FLAG_LISTS_KEPT:
                rendered[meta.flags, recent] = octets
        return octets

    def column(metas: Sequence[MessageMeta], recents: Sequence[bool],
               _: Sequence[fetch.HeaderFields | None]) -> list[bytes]:
        found = list(map(rendered.get, zip(map(_FLAGS, metas), recents, strict=True)))
        if None in found:
            return list(map(flags, metas, recents, repeat(None)))
        return cast(list[bytes], found)

    return flags, column


def _header(head: fetch.HeaderFields | None) -> fetch.HeaderFields:
    if head is None:  # never: `render` gives header items their header
        raise ValueError("header item without a header")
    return head


def _literal(octets: bytes) -> bytes:
    return literal(octets) if octets else b'""'

