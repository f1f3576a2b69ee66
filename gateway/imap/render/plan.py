"""FETCH items rendered for one message at a time, and what SEARCH and FETCH share when a
message fails to render.

Holds `FetchPlan` (the items of one FETCH worked out once for all its messages),
`message_parser` (MIME parsing with the connection's limits), `header_octets` (a stored
header as they read it), `candidate` (a message as SEARCH sees it) and `degraded`
(logging that a message was served opaque). Pure functions over opened messages in
memory: it never calls storage and never keeps a message.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import traceback
from collections.abc import Callable, Sequence

from gateway.imap.backend import MessageMeta, ParsedHeader, StoredHeader
from gateway.imap.config import ImapConfig
from gateway.imap.protocol import (
    RECENT,
    Content,
    FetchAttribute,
    FetchKind,
    Raw,
    Section,
    SectionText,
    Untagged,
    Value,
    flag_list,
    serialize,
)
from gateway.imap.render import binary, fetch
from gateway.imap.render.direct import FLAG_LISTS_KEPT, direct_renderer
from gateway.imap.render.search import Candidate

log = logging.getLogger(__name__)


def message_parser(config: ImapConfig) -> Callable[[bytes], fetch.MimePart]:
    return functools.partial(
        fetch.parse_message, max_depth=config.max_mime_depth, max_parts=config.max_mime_parts
    )


Octets = bytes | fetch.HeaderBlock  # a message, or its header block with the fields split


def header_octets(header: StoredHeader) -> Octets:
    """What FETCH and SEARCH read of a header: the store's split fields when it has them
    (`ParsedHeader`, from its header cache), so HEADER.FIELDS and ENVELOPE do not parse
    the header again; else the octets, parsed when an item needs them."""
    if isinstance(header, ParsedHeader):
        return fetch.HeaderBlock(header.header, header.fields)
    return header.header


def with_recent(meta: MessageMeta) -> MessageMeta:
    """A message's metadata as a session shows it when it is \\Recent for it (the flag
    is never stored)."""
    return dataclasses.replace(meta, flags=meta.flags | {RECENT})


def raw_octets(data: Octets | None) -> bytes | None:
    return data.header if isinstance(data, fetch.HeaderBlock) else data


def candidate(
    i: int,
    meta: MessageMeta,
    data: Octets | None,
    content: Content,
    parse: Callable[[bytes], fetch.MimePart],
) -> Candidate:
    message: fetch.MimePart | fetch.HeaderBlock | None = None
    if isinstance(data, fetch.HeaderBlock):
        message = data
    elif data is not None and content is Content.HEADER:
        message = fetch.HeaderBlock.parse(data)
    elif data is not None:
        message = parse(data)
    return Candidate(i + 1, meta, message)


def degraded(command: str, uid: int, exc: Exception) -> None:
    """Log that one message was served opaque: the error's type and the frame that raised
    it, never its text (which could quote the message)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    log.warning(
        "imap %s: message uid=%d shown opaque after %s at %s:%d:%s",
        command,
        uid,
        type(exc).__name__,
        frame.filename.rsplit("/", 1)[-1],
        frame.lineno,
        frame.name,
    )


class FetchPlan:
    """The items of one FETCH command, worked out once for all its messages: their
    response names, how much of a message they read together (`content`), and the flag
    lists already rendered (most messages share a few sets of flags). `parse` takes a
    whole message apart (`fetch.parse_message` with the connection's MIME limits). The
    items of a header sync are written straight to octets (`direct.direct_renderer`)."""

    def __init__(
        self,
        attributes: Sequence[FetchAttribute],
        parse: Callable[[bytes], fetch.MimePart] = fetch.parse_message,
    ) -> None:
        self.attributes = tuple(attributes)
        self._parse = parse
        self._items = tuple((a, Raw.of(a.response_name), a.content) for a in self.attributes)
        self.content = max((a.content for a in self.attributes), default=Content.NONE)
        self._flag_lists: dict[frozenset[str], tuple[Value, ...]] = {}
        self._direct = direct_renderer(self.attributes)

    def _flags(self, flags: frozenset[str]) -> tuple[Value, ...]:
        rendered = self._flag_lists.get(flags)
        if rendered is None:
            rendered = flag_list(flags)
            if len(self._flag_lists) < FLAG_LISTS_KEPT:
                self._flag_lists[flags] = rendered
        return rendered

    @property
    def writes_directly(self) -> bool:
        """Whether `line` writes these items straight to octets (`direct.direct_renderer`):
        metadata and header sections only."""
        return self._direct is not None

    def line(
        self, number: int, meta: MessageMeta, recent: bool, stored: StoredHeader | None
    ) -> bytes:
        """The octets of `* number FETCH (...)` for one message, given its metadata as
        stored, whether the session shows it \\Recent, and its header (None for items
        that read nothing); as `items` renders it when the direct writer fails."""
        if self._direct is not None:
            try:
                return self._direct.line(number, meta, recent, stored)
            except Exception:  # noqa: BLE001, S110 -- `items` serves it, opaque if it must
                pass
        data = header_octets(stored) if stored is not None else None
        shown = with_recent(meta) if recent else meta
        return serialize(Untagged((number, _FETCH, self.items(shown, data))))

    def lines(
        self, numbers: Sequence[int], metas: Sequence[MessageMeta], recents: Sequence[bool],
        stored: Sequence[StoredHeader | None],
    ) -> bytes:
        """`line` of each message, joined: the direct writer's `lines` (values worked out
        column by column) where it writes these items, else one `line` a message."""
        if self._direct is not None:
            try:
                return self._direct.lines(numbers, metas, recents, stored)
            except Exception:  # noqa: BLE001, S110 -- `line` serves each, opaque if it must
                pass
        return b"".join(map(self.line, numbers, metas, recents, stored))

    def items(self, meta: MessageMeta, data: Octets | None) -> tuple[Value, ...]:
        """The parenthesised FETCH data of one message. `data` is what `content` says:
        the whole message, its header block alone, or None. A message whose rendering
        fails is served opaque (`fetch.opaque_message`): the session and the other
        messages go on. `binary.UnknownEncoding` is raised: it fails the FETCH."""
        try:
            return self._render(meta, data, self._parse, fetch.HeaderBlock.parse)
        except binary.UnknownEncoding:
            raise
        except Exception as exc:  # noqa: BLE001 -- one message must not end the session
            degraded("FETCH", meta.uid, exc)
            opaque = fetch.opaque_message
            return self._render(meta, raw_octets(data), opaque, opaque)

    def _render(
        self,
        meta: MessageMeta,
        data: Octets | None,
        parse: Callable[[bytes], fetch.MimePart],
        parse_header: Callable[[bytes], fetch.MimePart | fetch.HeaderBlock],
    ) -> tuple[Value, ...]:
        body = data if self.content is Content.FULL and isinstance(data, bytes) else None
        tree: fetch.MimePart | None = None
        head: fetch.MimePart | fetch.HeaderBlock | None = None

        def parsed() -> fetch.MimePart:
            nonlocal tree
            if tree is None:
                tree = parse(body or b"")
            return tree

        def headers() -> fetch.MimePart | fetch.HeaderBlock:
            nonlocal head
            if body is not None:
                return parsed()
            if head is None:
                head = data if isinstance(data, fetch.HeaderBlock) else parse_header(data or b"")
            return head

        raw = body or b""
        out: list[Value] = []
        for attr, name, content in self._items:
            kind = attr.kind
            value: Value
            if kind is FetchKind.UID:
                value = meta.uid
            elif kind is FetchKind.FLAGS:
                value = self._flags(meta.flags)
            elif kind is FetchKind.INTERNALDATE:
                value = fetch.internal_date(meta.internal_date)
            elif kind is FetchKind.RFC822_SIZE:
                value = meta.size
            elif kind is FetchKind.MODSEQ:
                value = (meta.modseq,)
            elif kind is FetchKind.ENVELOPE:
                value = fetch.envelope(headers())
            elif kind is FetchKind.BODYSTRUCTURE:
                value = fetch.body_structure(parsed())
            elif kind is FetchKind.BODY:
                value = fetch.body_structure(parsed(), extensible=False)
            elif kind is FetchKind.RFC822:
                value = raw
            elif kind is FetchKind.RFC822_HEADER:
                value = headers().header
            elif kind is FetchKind.RFC822_TEXT:
                value = fetch.section_octets(raw, parsed(), _TEXT_SECTION)
            elif kind is FetchKind.BINARY or kind is FetchKind.BINARY_SIZE:
                value = binary.item(attr, raw, parsed)
            else:
                section = attr.section or _WHOLE_SECTION
                if content is Content.HEADER:
                    octets = fetch.header_section(headers(), section)
                elif section == _WHOLE_SECTION:
                    octets = raw
                else:
                    octets = fetch.section_octets(raw, parsed(), section)
                if attr.partial is not None:
                    origin, length = attr.partial
                    octets = octets[origin : origin + length]
                value = octets
            out += [name, value]
        return tuple(out)


_FETCH = Raw(b"FETCH")
_WHOLE_SECTION = Section()
_TEXT_SECTION = Section(text=SectionText.TEXT)
