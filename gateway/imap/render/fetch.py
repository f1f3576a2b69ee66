"""One decrypted message, taken apart the way FETCH and SEARCH see it.

Holds `parse_message` (a MIME tree that keeps the exact octets of every header and body, so
`BODY[1.2]` and the sizes in BODYSTRUCTURE agree), `opaque_message` (the same message shown
without looking inside), `HeaderBlock` (a header block alone, for the items that read only
headers: no MIME parse), `envelope`, `body_structure`, `section_octets`, `header_section`,
`internal_date`, and `decoded_text` (what SEARCH BODY/TEXT compares).
Header blocks and address lists are read by `bridge.headers`, the gateway's one header
parser; the stdlib `email` package parses parameters and RFC 2047/2231;
a part's Content-* fields are read once into `ContentFields`, and a part they do not
describe readably, or nested past the limits, is one opaque `application/octet-stream`
leaf: whatever a sender puts in a message, taking it apart never raises.

Everything here works on bytes in memory, returns wire `Value`s, and never writes, logs or
keeps a message: the caller drops the tree when the response is sent.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import functools
import quopri
import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bridge.headers import decoded_text as decode_words
from bridge.headers import parse_header, unfold
from gateway.imap.backend import header_block, header_end
from gateway.imap.protocol import Adjacent, Section, SectionText, Value
from gateway.imap.render.addresses import address_groups

# parse_message's defaults (ImapConfig.max_mime_depth and max_mime_parts set them):
MAX_MIME_DEPTH = 32  # deeper multiparts / message parts are shown as opaque leaves
MAX_MIME_PARTS = 10_000  # parts in one message; the last one holds whatever follows

_CRLF = b"\r\n"
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class MimePart:
    """A message or body part: exact octets plus what its header says.

    header    the header block, the blank line that ends it included (when present)
    fields    (lower-case name, the field's octets with continuation lines and CRLF)
    content   what its Content-* fields say (`ContentFields`; OPAQUE when unreadable)
    source    the whole message; the part's body is source[start:end], the octets after
              its header (every part of a tree shares one source: nesting copies nothing)
    children  the parts of a multipart
    embedded  the message inside a message/rfc822 part
    """

    header: bytes
    fields: tuple[tuple[str, bytes], ...]
    content: ContentFields
    source: bytes = dataclasses.field(repr=False)
    start: int
    end: int
    children: tuple[MimePart, ...] = ()
    embedded: MimePart | None = None

    @property
    def body(self) -> bytes:
        return self.source[self.start : self.end]

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def line_count(self) -> int:
        """body-fld-lines: the line ends in the body, as Dovecot, Cyrus and UW-IMAP count
        them (a part's last line, whose CRLF belongs to the boundary, is not counted)."""
        return self.source.count(b"\n", self.start, self.end)

    @property
    def is_multipart(self) -> bool:
        return self.content.maintype == "multipart"

    def field(self, name: str) -> str | None:
        """The first field called `name`, unfolded, as text (undecodable octets escaped)."""
        return _field(self.fields, name)


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """A message's header block alone (`header_block`): what ENVELOPE and the header
    sections of the message read. Its fields are those `parse_message` would find."""

    header: bytes
    fields: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, header: bytes) -> HeaderBlock:
        return cls(header, _fields(header))

    def field(self, name: str) -> str | None:
        """The first field called `name`, unfolded, as text (undecodable octets escaped)."""
        return _field(self.fields, name)


class HeaderFields(Protocol):
    """What the header sections read: a header block and its fields (a `MimePart`, a
    `HeaderBlock`, or the store's `ParsedHeader`)."""

    @property
    def header(self) -> bytes: ...

    @property
    def fields(self) -> tuple[tuple[str, bytes], ...]: ...


def _field(fields: tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, raw in fields:
        if key == name:
            return unfold(raw).decode("utf-8", "surrogateescape").strip()
    return None


def _fields(header: bytes) -> tuple[tuple[str, bytes], ...]:
    return parse_header(header, limit=None).fields


@dataclass(frozen=True, slots=True)
class ContentFields:
    """What a part's Content-* fields say (RFC 2045, 2183, 2231), read once at parse time so
    that rendering never calls `email` again. Parameter lists are flat (name, value, ...)
    as BODYSTRUCTURE sends them; values hold undecodable octets as surrogate escapes, which
    the wire gives back as the octets that were sent."""

    maintype: str
    subtype: str
    params: tuple[str, ...] = ()
    disposition: tuple[str, tuple[str, ...]] | None = None
    language: tuple[str, ...] = ()
    id: str | None = None
    description: str | None = None
    location: str | None = None
    md5: str | None = None
    encoding: str = "7bit"  # as given (case kept), for BODYSTRUCTURE
    charset: str | None = None  # a usable text codec name, for SEARCH
    boundary: bytes | None = None

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    @property
    def transfer_encoding(self) -> str:
        return self.encoding.lower()


OPAQUE = ContentFields("application", "octet-stream")
"""How a part that cannot be parsed is shown: one opaque leaf, its octets as they are."""

# type "/" subtype, each an RFC 2045 token: printable ASCII without space or tspecials
_MEDIA_TYPE = re.compile(r"([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)/([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)")


class _RawValues(email.policy.Compat32):
    """compat32, but a field comes back as the str it was set to. compat32 hands a value
    holding undecodable octets (surrogate escapes) back as a `Header`: not a str, and its
    str() raises when the value also holds decoded non-ASCII text."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_RAW_VALUES = _RawValues()
# The failure modes of `email`'s parameter parsing on hostile input (RFC 2231 sections
# numbered past int()'s digit limit, numbered and unnumbered sections of one name, ...).
_PARAMETER_ERRORS = (ValueError, TypeError, LookupError, UnicodeError, email.errors.MessageError)


def _content(fields: tuple[tuple[str, bytes], ...], default_type: str) -> ContentFields:
    """The part's Content-* fields; OPAQUE when they cannot be read."""
    message = email.message.Message(policy=_RAW_VALUES)
    for name, raw in fields:
        if name.startswith("content-"):
            value = raw.split(b":", 1)[1].decode("utf-8", "surrogateescape")
            message[name] = _FOLD.sub("", value).strip()
    try:
        return _read_content(message, default_type)
    except _PARAMETER_ERRORS:
        return OPAQUE


def _read_content(message: email.message.Message, default_type: str) -> ContentFields:
    declared = message.get("content-type")
    if declared is None:
        maintype, subtype = default_type.split("/")
    else:
        media = _MEDIA_TYPE.fullmatch(declared.partition(";")[0].strip())
        if media is None:
            return OPAQUE
        maintype, subtype = media.group(1).lower(), media.group(2).lower()
    params = _param_list(message, "content-type") if declared is not None else ()
    boundary: bytes | None = None
    if maintype == "multipart":
        value = message.get_param("boundary")
        if isinstance(value, tuple):  # RFC 2231: the octets its %XX escapes stand for
            boundary = value[2].encode("raw-unicode-escape")
        elif isinstance(value, str):
            boundary = value.encode("utf-8", "surrogateescape")
    disposition = None
    kind = message.get("content-disposition")
    if kind:
        disposition = (kind.split(";", 1)[0].strip(), _param_list(message, "content-disposition"))
    languages = (message.get("content-language") or "").split(",")
    return ContentFields(
        maintype,
        subtype,
        params,
        disposition,
        tuple(t.strip() for t in languages if t.strip()),
        message.get("content-id"),
        message.get("content-description"),
        message.get("content-location"),
        message.get("content-md5"),
        (message.get("content-transfer-encoding") or "7bit").strip() or "7bit",
        _text_codec(message.get_content_charset()) if maintype == "text" else None,
        boundary or None,
    )


def _param_list(message: email.message.Message, header: str) -> tuple[str, ...]:
    out: list[str] = []
    for name, value in (message.get_params(header=header) or [])[1:]:
        if isinstance(value, tuple):  # RFC 2231: give it back in its extended form
            text = _collapse(value)
            quoted = urllib.parse.quote(text, safe="", errors="surrogateescape")
            out += [name + "*", "utf-8''" + quoted]
        else:
            out += [name, value]
    return tuple(out)


def _text_codec(charset: str | None) -> str | None:
    """`charset` if Python decodes text with it (not e.g. `rot13` or `base64`), else None."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def _collapse(value: tuple[str | None, str | None, str]) -> str:
    """An RFC 2231 value as text; as sent (percent escapes undone) if its charset fails."""
    try:
        return email.utils.collapse_rfc2231_value(value)
    except (LookupError, UnicodeError):  # e.g. `idna`, which refuses errors="replace"
        return urllib.parse.unquote(value[2], errors="surrogateescape")


def _split_multipart(
    source: bytes, start: int, end: int, boundary: bytes, most: int
) -> list[tuple[int, int]]:
    """The parts of source[start:end] between `--boundary` lines (preamble and epilogue
    dropped), as (start, end) offsets; at most `most`, the last running to `end`."""
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        at = source.find(delimiter, pos, end)
        if at < 0:
            break
        pos = at + len(delimiter)
        if at != start and (at - 2 < start or source[at - 2 : at] != _CRLF):
            continue
        line_end = source.find(_CRLF, pos, end)
        line_end = end if line_end < 0 else line_end
        rest = source[pos:line_end]
        closing = rest.startswith(b"--")
        if (rest[2:] if closing else rest).strip(b" \t"):
            continue  # a longer boundary that merely starts with this one
        if part_start is not None:
            parts.append((part_start, max(part_start, at - 2)))
        if closing:
            return parts
        part_start = min(line_end + 2, end)
        if len(parts) + 1 >= most:
            break
        pos = line_end
    if part_start is not None:
        parts.append((part_start, end))
    return parts


@dataclass(slots=True)
class _Budget:
    """How much deeper one message may nest, and into how many more parts it may be cut."""

    depth: int
    parts: int


def parse_message(
    raw: bytes,
    *,
    default_type: str = "text/plain",
    max_depth: int = MAX_MIME_DEPTH,
    max_parts: int = MAX_MIME_PARTS,
) -> MimePart:
    """The MIME tree of a message (or of a part, header first). Never raises: a part whose
    Content-* fields cannot be read, nested deeper than `max_depth` or past `max_parts`
    parts, is an opaque leaf (`OPAQUE`); a multipart without parts is shown as what it
    is, text. The tree's parts are offsets into `raw`, never copies."""
    return _parse(raw, 0, len(raw), default_type, 0, _Budget(max_depth, max_parts))


def _parse(
    source: bytes, start: int, end: int, default_type: str, depth: int, budget: _Budget
) -> MimePart:
    block = parse_header(source, limit=None, start=start, stop=end)
    body_start = block.end
    header = source[start:body_start]
    fields = block.fields
    content = _content(fields, default_type)

    def part(
        shown: ContentFields, children: tuple[MimePart, ...] = (), embedded: MimePart | None = None
    ) -> MimePart:
        return MimePart(header, fields, shown, source, body_start, end, children, embedded)

    nests = content.maintype in ("multipart", "message")
    if nests and (depth >= budget.depth or budget.parts <= 0):
        return part(OPAQUE)
    if content.maintype == "multipart":
        if content.boundary is not None:
            spans = _split_multipart(source, body_start, end, content.boundary, budget.parts)
            budget.parts -= len(spans)
            child_type = "message/rfc822" if content.subtype == "digest" else "text/plain"
            children = tuple(_parse(source, a, b, child_type, depth + 1, budget) for a, b in spans)
            if children:
                return part(content, children=children)
        return part(_AS_TEXT)
    if content.content_type == "message/rfc822" and content.transfer_encoding in _IDENTITY:
        budget.parts -= 1
        embedded = _parse(source, body_start, end, "text/plain", depth + 1, budget)
        return part(content, embedded=embedded)
    return part(content)


def opaque_message(raw: bytes) -> MimePart:
    """A message shown without looking inside: its header block, no fields, one opaque
    body. What a message becomes when rendering it failed in a way nobody foresaw."""
    return MimePart(header_block(raw), (), OPAQUE, raw, header_end(raw), len(raw))


_AS_TEXT = ContentFields("text", "plain")
_IDENTITY = ("7bit", "8bit", "binary")


# ---------------------------------------------------------------------------------------
# Sections


def _message_parts(message: MimePart) -> tuple[MimePart, ...]:
    return message.children if message.children else (message,)


def find_part(message: MimePart, path: tuple[int, ...]) -> MimePart | None:
    """Part `1.2.3` of a message (RFC 3501 section 6.4.5 numbering)."""
    parts: tuple[MimePart, ...] | None = _message_parts(message)
    current: MimePart | None = None
    for number in path:
        if parts is None or number > len(parts):
            return None
        current = parts[number - 1]
        if current.children:
            parts = current.children
        elif current.embedded is not None:
            parts = _message_parts(current.embedded)
        else:
            parts = None
    return current


@functools.lru_cache(maxsize=64)
def _lowered(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


def _header_fields(message: HeaderFields, names: tuple[str, ...], exclude: bool) -> bytes:
    wanted = _lowered(names)
    kept = [raw for name, raw in message.fields if (name in wanted) != exclude and name]
    return b"".join(kept) + _CRLF


def section_octets(raw: bytes, message: MimePart, section: Section) -> bytes:
    """The octets of BODY[section]; b"" for a part that does not exist or has no such text."""
    target: MimePart | None = message
    if section.part:
        part = find_part(message, section.part)
        if part is None:
            return b""
        if section.text is None:
            return part.body
        if section.text is SectionText.MIME:
            return part.header
        target = part.embedded
    elif section.text is None:
        return raw
    if target is None:
        return b""
    if section.text is SectionText.TEXT:
        return target.body
    return header_section(target, section)


def header_section(message: HeaderFields, section: Section) -> bytes:
    """The octets of BODY[HEADER] or BODY[HEADER.FIELDS (.NOT) (...)] of this message."""
    if section.text is SectionText.HEADER:
        return message.header
    return _header_fields(
        message, section.fields, exclude=section.text is SectionText.HEADER_FIELDS_NOT
    )


# ---------------------------------------------------------------------------------------
# ENVELOPE


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internal_date(when: datetime) -> str:
    """`17-Jul-1996 02:44:25 -0700`, `01-Jan-2025 ...` (date-time, RFC 3501 section 9: of
    date-day-fixed's two forms the 2DIGIT one, as Dovecot and the RFC's examples write it)."""
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when:%H:%M:%S} {sign}{hours:02d}{mins:02d}"
    )


def _phrase(name: str) -> Value:
    """A display name for the wire: ASCII as is, else RFC 2047 encoded, raw 8-bit as octets."""
    if not name:
        return None
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable octets from the header: give them back as sent
        return name.encode("utf-8", "surrogateescape")
    return email.header.Header(name, "utf-8").encode()


def _addresses(value: str | None) -> Value:
    """An address list for ENVELOPE, groups included (`addresses.address_groups`: names as
    sent). The addresses follow one another without spaces: `env-to = "(" 1*address ")"`."""
    if not value:
        return None
    out: list[Value] = []
    for group in address_groups(value):
        if group.name is not None:
            out.append((None, None, _phrase(group.name) or "", None))
        out += [
            (_phrase(a.name), a.route, a.local or "MISSING_MAILBOX", a.domain or "MISSING_DOMAIN")
            for a in group.addresses
        ]
        if group.name is not None:
            out.append((None, None, None, None))
    return (Adjacent(tuple(out)),) if out else None


def envelope(message: MimePart | HeaderBlock) -> Value:
    """ENVELOPE: date subject from sender reply-to to cc bcc in-reply-to message-id. A text
    field that is absent is NIL, one present but empty "" (RFC 3501 7.4.2); an empty
    Sender or Reply-To is the From."""
    sender_default = _addresses(message.field("from"))
    return (
        message.field("date"),
        message.field("subject"),
        sender_default,
        _addresses(message.field("sender")) or sender_default,
        _addresses(message.field("reply-to")) or sender_default,
        _addresses(message.field("to")),
        _addresses(message.field("cc")),
        _addresses(message.field("bcc")),
        message.field("in-reply-to"),
        message.field("message-id"),
    )


# ---------------------------------------------------------------------------------------
# BODYSTRUCTURE


def _params(params: tuple[str, ...]) -> Value:
    return params if params else None


def _extension(part: MimePart) -> tuple[Value, ...]:
    """body-fld-dsp, body-fld-lang, body-fld-loc."""
    content = part.content
    disposition: Value = None
    if content.disposition is not None:
        kind, params = content.disposition
        disposition = (kind, _params(params))
    languages = content.language
    language: Value = None
    if len(languages) == 1:
        language = languages[0]
    elif languages:
        language = languages
    return disposition, language, content.location


def body_structure(part: MimePart, *, extensible: bool = True) -> Value:
    """BODYSTRUCTURE (extensible) or BODY (not) of a message or part."""
    content = part.content
    if part.children:
        children = tuple(body_structure(c, extensible=extensible) for c in part.children)
        tail: tuple[Value, ...] = (content.subtype,)
        if extensible:
            tail += (_params(content.params), *_extension(part))
        return (Adjacent(children), *tail)
    params = _params(content.params)
    maintype = content.maintype
    if params is None and maintype == "text":
        params = ("charset", "us-ascii")
    fields: tuple[Value, ...] = (
        maintype,
        content.subtype,
        params,
        content.id,
        content.description,
        content.encoding,
        part.size,
    )
    if part.embedded is not None:
        fields += (
            envelope(part.embedded),
            body_structure(part.embedded, extensible=extensible),
            # Here a last line without its line end counts, as Dovecot counts it.
            part.line_count + (part.size > 0 and part.source[part.end - 1] != 0x0A),
        )
    elif maintype == "text":
        fields += (part.line_count,)
    if extensible:
        fields += (content.md5, *_extension(part))
    return fields


# ---------------------------------------------------------------------------------------
# Text for SEARCH


def _decode_body(part: MimePart) -> str:
    encoding = part.content.transfer_encoding
    data = part.body
    try:
        if encoding == "base64":
            data = base64.b64decode(data)
        elif encoding == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    try:
        return data.decode(part.content.charset or "utf-8", "replace")
    except (LookupError, UnicodeError):  # codecs such as idna refuse errors="replace"
        return data.decode("utf-8", "replace")


def decoded_text(message: MimePart) -> str:
    """The decoded text of every text/* leaf (and embedded message), for SEARCH BODY."""
    if message.children:
        return "\n".join(decoded_text(child) for child in message.children)
    if message.embedded is not None:
        return header_text(message.embedded) + "\n" + decoded_text(message.embedded)
    if message.content.maintype == "text":
        return _decode_body(message)
    return ""


def header_text(message: MimePart | HeaderBlock) -> str:
    """Every header field, unfolded and decoded, one per line (SEARCH TEXT)."""
    lines = []
    for _, raw in message.fields:
        text = _FOLD.sub("", raw.decode("utf-8", "surrogateescape")).rstrip("\r\n")
        lines.append(decode_words(text))
    return "\n".join(lines)
