"""FETCH attributes as the parser produces them, and how much of a message each reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.imap.protocol.chars import is_atom, quote


class FetchKind(enum.Enum):
    UID = "UID"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODYSTRUCTURE = "BODYSTRUCTURE"
    BODY = "BODY"  # BODYSTRUCTURE without extension data
    SECTION = "BODY[]"  # BODY[...] and BODY.PEEK[...]
    RFC822 = "RFC822"
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_TEXT = "RFC822.TEXT"
    BINARY = "BINARY[]"  # BINARY[part] and BINARY.PEEK[part] (RFC 3516): decoded content
    BINARY_SIZE = "BINARY.SIZE[]"  # its size in octets
    MODSEQ = "MODSEQ"  # RFC 7162 section 3.1.6


class SectionText(enum.Enum):
    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """What is inside `BODY[...]`: a part path and what of the part."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()  # HEADER.FIELDS (.NOT), spelled as the client sent them

    def __str__(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text is not None:
            spec = f"{spec}.{self.text.value}" if spec else self.text.value
        if self.text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
            names = " ".join(
                name if name and is_atom(name) else quote(name) for name in self.fields
            )
            spec = f"{spec} ({names})"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    kind: FetchKind
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (origin, octets)
    peek: bool = False

    @property
    def response_name(self) -> str:
        """The item name in the FETCH response (`BODY[HEADER]<0>` for `BODY.PEEK[HEADER]<0.9>`)."""
        kind = self.kind
        if kind is FetchKind.BINARY_SIZE:
            return f"BINARY.SIZE[{self.section or ''}]"
        if kind is not FetchKind.SECTION and kind is not FetchKind.BINARY:
            return str(kind.value)
        word = "BODY" if kind is FetchKind.SECTION else "BINARY"
        name = f"{word}[{self.section or ''}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        return name

    @property
    def sets_seen(self) -> bool:
        if self.kind is FetchKind.SECTION or self.kind is FetchKind.BINARY:
            return not self.peek
        return self.kind in (FetchKind.RFC822, FetchKind.RFC822_TEXT)

    @property
    def content(self) -> Content:
        """What of the message this item reads: nothing, the header block, or all of it."""
        kind = self.kind
        if kind in _METADATA_KINDS:
            return Content.NONE
        if kind is FetchKind.ENVELOPE or kind is FetchKind.RFC822_HEADER:
            return Content.HEADER
        section = self.section
        if (
            kind is FetchKind.SECTION
            and section is not None
            and not section.part
            and section.text in _HEADER_TEXTS
        ):
            return Content.HEADER
        return Content.FULL


class Content(enum.IntEnum):
    """How much of a message answering something takes, least first."""

    NONE = 0  # metadata: UID, flags, internal date, size
    HEADER = 1  # the header block (`gateway.imap.backend.header_block`)
    FULL = 2  # the whole message


_METADATA_KINDS = frozenset(
    {
        FetchKind.UID,
        FetchKind.FLAGS,
        FetchKind.INTERNALDATE,
        FetchKind.RFC822_SIZE,
        FetchKind.MODSEQ,
    }
)
_HEADER_TEXTS = frozenset(
    {SectionText.HEADER, SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT}
)


MACROS: dict[str, tuple[FetchKind, ...]] = {
    "ALL": (FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE, FetchKind.ENVELOPE),
    "FAST": (FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE),
    "FULL": (
        FetchKind.FLAGS,
        FetchKind.INTERNALDATE,
        FetchKind.RFC822_SIZE,
        FetchKind.ENVELOPE,
        FetchKind.BODY,
    ),
}

SIMPLE_ATTRIBUTES = {
    kind.value: kind
    for kind in FetchKind
    if kind not in (FetchKind.SECTION, FetchKind.BODY, FetchKind.BINARY, FetchKind.BINARY_SIZE)
}
