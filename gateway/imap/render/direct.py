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

from collections.abc import Callable, Sequence

from gateway.imap.backend import MessageMeta, ParsedHeader, StoredHeader
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

# One message's response line: (message number, metadata as stored, whether the client is
# shown \Recent for it, its header or None) -> octets.
DirectRenderer = Callable[[int, MessageMeta, bool, StoredHeader | None], bytes]
# One item: its text with one %-placeholder (`UID %d`), and what fills the placeholder.
_Value = Callable[[MessageMeta, bool, "fetch.HeaderFields | None"], bytes | int]
_Item = tuple[bytes, _Value]

FLAG_LISTS_KEPT = 256  # distinct flag lists a FETCH keeps rendered
_NAME_TUPLES_KEPT = 1024  # one a block of the store's header cache
_FIELD_TEXTS = (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT)


def direct_renderer(attributes: Sequence[FetchAttribute]) -> DirectRenderer | None:
    """The octets writer for these FETCH items, or None if one of them needs more than
    metadata and a header section. A message's line is one %-format of the whole
    response: no octets per item but the values themselves."""
    forms: list[bytes] = []
    values: list[_Value] = []
    reads_header = False
    for attr in attributes:
        item = _item(attr)
        if item is None:
            return None
        reads_header = reads_header or attr.content is Content.HEADER
        forms.append(item[0])
        values.append(item[1])
    if not forms:
        return None
    line = b"* %d FETCH (" + b" ".join(forms) + b")\r\n"
    parse = fetch.HeaderBlock.parse

    def render(number: int, meta: MessageMeta, recent: bool, stored: StoredHeader | None) -> bytes:
        head: fetch.HeaderFields | None = None
        if reads_header:
            if stored is None:
                raise ValueError("header items without a header")
            head = stored if isinstance(stored, ParsedHeader) else parse(stored.header)
        return line % (number, *[value(meta, recent, head) for value in values])

    return render


def _item(attr: FetchAttribute) -> _Item | None:
    # A response name may quote a field name holding "%": it is text of the format.
    name = attr.response_name.encode("ascii").replace(b"%", b"%%")
    kind = attr.kind
    if kind is FetchKind.UID:
        return name + b" %d", lambda meta, _, __: meta.uid
    if kind is FetchKind.RFC822_SIZE:
        return name + b" %d", lambda meta, _, __: meta.size
    if kind is FetchKind.INTERNALDATE:
        return name + b" %b", lambda meta, _, __: encode_value(
            fetch.internal_date(meta.internal_date)
        )
    if kind is FetchKind.FLAGS:
        return name + b" %b", _flags()
    if attr.content is not Content.HEADER or kind is FetchKind.ENVELOPE:
        return None
    if kind is FetchKind.RFC822_HEADER:
        return name + b" %b", lambda _, __, head: _literal(_header(head).header)
    section = attr.section
    if section is None:
        return None
    partial = attr.partial
    cut = _cut(section) if section.text in _FIELD_TEXTS else None

    def header_section(_: MessageMeta, __: bool, head: fetch.HeaderFields | None) -> bytes:
        if cut is not None and isinstance(head, ParsedHeader):
            octets = cut(head)
        else:
            octets = fetch.header_section(_header(head), section)
        if partial is not None:
            origin, length = partial
            octets = octets[origin : origin + length]
        return _literal(octets)

    return name + b" %b", header_section


def _cut(section: Section) -> Callable[[ParsedHeader], bytes]:
    """HEADER.FIELDS (.NOT) of a store-split header, as `fetch.header_section` cuts it,
    from the name numbers of its `names` (worked out once per distinct tuple of names)."""
    wanted = frozenset(name.lower() for name in section.fields)
    exclude = section.text is SectionText.HEADER_FIELDS_NOT
    numbers: dict[tuple[str, ...], frozenset[int]] = {}
    # The names last seen and their numbers: a block of the cache shares one tuple.
    last_names: tuple[str, ...] | None = None
    last_kept: frozenset[int] = frozenset()

    def cut(head: ParsedHeader) -> bytes:
        nonlocal last_names, last_kept
        names = head.names
        if names is not last_names:
            kept = numbers.get(names)
            if kept is None:
                kept = frozenset(
                    i for i, name in enumerate(names) if name and (name in wanted) != exclude
                )
                if len(numbers) < _NAME_TUPLES_KEPT:
                    numbers[names] = kept
            last_names, last_kept = names, kept
        return head.cut(last_kept) + b"\r\n"

    return cut


def _flags() -> _Value:
    """FLAGS as the client sees them: \\Recent added where the session shows it (it is
    never stored)."""
    rendered = {False: dict[frozenset[str], bytes](), True: dict[frozenset[str], bytes]()}

    def flags(meta: MessageMeta, recent: bool, _: fetch.HeaderFields | None) -> bytes:
        kept = rendered[recent]
        octets = kept.get(meta.flags)
        if octets is None:
            octets = encode_value(flag_list(meta.flags | {RECENT} if recent else meta.flags))
            if len(kept) < FLAG_LISTS_KEPT:
                kept[meta.flags] = octets
        return octets

    return flags


def _header(head: fetch.HeaderFields | None) -> fetch.HeaderFields:
    if head is None:  # never: `render` gives header items their header
        raise ValueError("header item without a header")
    return head


def _literal(octets: bytes) -> bytes:
    return literal(octets) if octets else b'""'

