"""One decrypted message, taken apart the way FETCH and SEARCH see it.

Holds `parse_message` (a MIME tree that keeps the exact octets of every header and body, so
`BODY[1.2]` and the sizes in BODYSTRUCTURE agree), `HeaderBlock` (a header block alone, for
the items that read only headers: no MIME parse), `envelope`, `body_structure`,
`section_octets`, `header_section`, `internal_date`, and `decoded_text` (what SEARCH
BODY/TEXT compares).
Header blocks and address lists are read by `bridge.headers`, the gateway's one header
parser; the stdlib `email` package parses the other values (parameters, RFC 2047/2231).

Everything here works on bytes in memory, returns wire `Value`s, and never writes, logs or
keeps a message: the caller drops the tree when the response is sent.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import functools
import quopri
import re
from dataclasses import dataclass
from datetime import datetime

from bridge.headers import parse_addresses, parse_header, unfold
from gateway.imap.backend import header_block
from gateway.imap.wire import Adjacent, Section, SectionText, Value

MAX_MIME_DEPTH = 32  # deeper multiparts / message parts are shown as opaque leaves

_CRLF = b"\r\n"
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class MimePart:
    """A message or body part: exact octets plus what its header says.

    header    the header block, the blank line that ends it included (when present)
    body      the octets after it
    fields    (lower-case name, the field's octets with continuation lines and CRLF)
    content   the Content-* fields parsed by `email` (type, parameters, disposition)
    children  the parts of a multipart
    embedded  the message inside a message/rfc822 part
    """

    header: bytes
    body: bytes
    fields: tuple[tuple[str, bytes], ...]
    content: email.message.Message
    children: tuple[MimePart, ...] = ()
    embedded: MimePart | None = None

    @property
    def is_multipart(self) -> bool:
        return self.content.get_content_maintype() == "multipart"

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


def _field(fields: tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, raw in fields:
        if key == name:
            return unfold(raw).decode("utf-8", "surrogateescape").strip()
    return None


def _split_header(raw: bytes) -> tuple[bytes, bytes]:
    header = header_block(raw)
    return header, raw[len(header) :]


def _fields(header: bytes) -> tuple[tuple[str, bytes], ...]:
    return parse_header(header, limit=None).fields


def _content(fields: tuple[tuple[str, bytes], ...], default_type: str) -> email.message.Message:
    content = email.message.Message()
    content.set_default_type(default_type)
    for name, raw in fields:
        if name.startswith("content-"):
            value = raw.split(b":", 1)[1].decode("utf-8", "surrogateescape")
            content[name] = _FOLD.sub("", value).strip()
    return content


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines (preamble and epilogue dropped)."""
    delimiter = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while True:
        at = body.find(delimiter, pos)
        if at < 0:
            break
        pos = at + len(delimiter)
        if at != 0 and body[at - 2 : at] != _CRLF:
            continue
        line_end = body.find(_CRLF, pos)
        line_end = len(body) if line_end < 0 else line_end
        rest = body[pos:line_end]
        closing = rest.startswith(b"--")
        if (rest[2:] if closing else rest).strip(b" \t"):
            continue  # a longer boundary that merely starts with this one
        if start is not None:
            parts.append(body[start : max(start, at - 2)])
        if closing:
            return parts
        start = line_end + 2
        pos = line_end
    if start is not None:
        parts.append(body[min(start, len(body)) :])
    return parts


def _retype(content: email.message.Message, content_type: str) -> None:
    del content["content-type"]
    content["content-type"] = content_type


def parse_message(raw: bytes, *, default_type: str = "text/plain", depth: int = 0) -> MimePart:
    """The MIME tree of a message (or of a part, header first)."""
    header, body = _split_header(raw)
    fields = _fields(header)
    content = _content(fields, default_type)
    maintype = content.get_content_maintype()
    if depth >= MAX_MIME_DEPTH and maintype in ("multipart", "message"):
        _retype(content, "application/octet-stream")
        return MimePart(header, body, fields, content)
    if maintype == "multipart":
        boundary = content.get_param("boundary")
        if isinstance(boundary, tuple):
            boundary = email.utils.collapse_rfc2231_value(boundary)
        if isinstance(boundary, str) and boundary:
            child_type = (
                "message/rfc822" if content.get_content_subtype() == "digest" else "text/plain"
            )
            raw_parts = _split_multipart(body, boundary.encode("utf-8", "surrogateescape"))
            children = tuple(
                parse_message(p, default_type=child_type, depth=depth + 1) for p in raw_parts
            )
            if children:
                return MimePart(header, body, fields, content, children=children)
        # A multipart without parts is shown as what it is: opaque text.
        _retype(content, "text/plain")
        return MimePart(header, body, fields, content)
    encoding = (content.get("content-transfer-encoding") or "7bit").strip().lower()
    if content.get_content_type() == "message/rfc822" and encoding in ("7bit", "8bit", "binary"):
        embedded = parse_message(body, depth=depth + 1)
        return MimePart(header, body, fields, content, embedded=embedded)
    return MimePart(header, body, fields, content)


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


def _header_fields(message: MimePart | HeaderBlock, names: tuple[str, ...], exclude: bool) -> bytes:
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


def header_section(message: MimePart | HeaderBlock, section: Section) -> bytes:
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
    """`17-Jul-1996 02:44:25 -0700` (date-time, RFC 3501 section 9)."""
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
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


def _address(display: str, local: str, domain: str) -> Value:
    return (
        _phrase(display),
        None,
        local or "MISSING_MAILBOX",
        domain or "MISSING_DOMAIN",
    )


def _addresses(value: str | None) -> Value:
    """An address list for ENVELOPE, groups included, read by the shared lenient parser
    (display names decoded, then given back ASCII by `_phrase`)."""
    if not value:
        return None
    out: list[Value] = []
    for group in parse_addresses(value, strict=False).groups:
        if group.name is not None:
            out.append((None, None, _phrase(group.name) or "", None))
        out += [_address(m.display_name, m.local, m.domain) for m in group.mailboxes]
        if group.name is not None:
            out.append((None, None, None, None))
    return tuple(out) if out else None


def envelope(message: MimePart | HeaderBlock) -> Value:
    """ENVELOPE: date subject from sender reply-to to cc bcc in-reply-to message-id."""
    sender_default = _addresses(message.field("from"))

    def text(name: str) -> Value:
        value = message.field(name)
        return value if value else None

    return (
        text("date"),
        text("subject"),
        sender_default,
        _addresses(message.field("sender")) or sender_default,
        _addresses(message.field("reply-to")) or sender_default,
        _addresses(message.field("to")),
        _addresses(message.field("cc")),
        _addresses(message.field("bcc")),
        text("in-reply-to"),
        text("message-id"),
    )


# ---------------------------------------------------------------------------------------
# BODYSTRUCTURE


def _param_list(content: email.message.Message, header: str) -> Value:
    params = content.get_params(header=header) or []
    out: list[str] = []
    for name, value in params[1:]:
        if isinstance(value, tuple):  # RFC 2231: give it back in its extended form
            text = email.utils.collapse_rfc2231_value(value)
            out += [name + "*", email.utils.encode_rfc2231(text, "utf-8")]
        else:
            out += [name, value]
    return tuple(out) if out else None


def _line_count(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _extension(part: MimePart) -> tuple[Value, ...]:
    """body-fld-dsp, body-fld-lang, body-fld-loc."""
    content = part.content
    disposition: Value = None
    kind = content.get("content-disposition")
    if kind:
        disposition = (
            kind.split(";", 1)[0].strip(),
            _param_list(content, "content-disposition"),
        )
    languages = [t.strip() for t in (content.get("content-language") or "").split(",") if t.strip()]
    language: Value = None
    if len(languages) == 1:
        language = languages[0]
    elif languages:
        language = tuple(languages)
    return disposition, language, content.get("content-location")


def body_structure(part: MimePart, *, extensible: bool = True) -> Value:
    """BODYSTRUCTURE (extensible) or BODY (not) of a message or part."""
    content = part.content
    if part.children:
        children = tuple(body_structure(c, extensible=extensible) for c in part.children)
        tail: tuple[Value, ...] = (content.get_content_subtype(),)
        if extensible:
            tail += (_param_list(content, "content-type"), *_extension(part))
        return (Adjacent(children), *tail)
    params = _param_list(content, "content-type")
    maintype = content.get_content_maintype()
    if params is None and maintype == "text":
        params = ("charset", "us-ascii")
    fields: tuple[Value, ...] = (
        maintype,
        content.get_content_subtype(),
        params,
        content.get("content-id"),
        content.get("content-description"),
        (content.get("content-transfer-encoding") or "7bit").strip(),
        len(part.body),
    )
    if part.embedded is not None:
        fields += (
            envelope(part.embedded),
            body_structure(part.embedded, extensible=extensible),
            _line_count(part.body),
        )
    elif maintype == "text":
        fields += (_line_count(part.body),)
    if extensible:
        fields += (content.get("content-md5"), *_extension(part))
    return fields


# ---------------------------------------------------------------------------------------
# Text for SEARCH


def _decode_body(part: MimePart) -> str:
    encoding = (part.content.get("content-transfer-encoding") or "").strip().lower()
    data = part.body
    try:
        if encoding == "base64":
            data = base64.b64decode(data)
        elif encoding == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    charset = part.content.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def decoded_header(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded (as is when they do not decode)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


def decoded_text(message: MimePart) -> str:
    """The decoded text of every text/* leaf (and embedded message), for SEARCH BODY."""
    if message.children:
        return "\n".join(decoded_text(child) for child in message.children)
    if message.embedded is not None:
        return header_text(message.embedded) + "\n" + decoded_text(message.embedded)
    if message.content.get_content_maintype() == "text":
        return _decode_body(message)
    return ""


def header_text(message: MimePart | HeaderBlock) -> str:
    """Every header field, unfolded and decoded, one per line (SEARCH TEXT)."""
    lines = []
    for _, raw in message.fields:
        text = _FOLD.sub("", raw.decode("utf-8", "surrogateescape")).rstrip("\r\n")
        lines.append(decoded_header(text))
    return "\n".join(lines)
