"""BINARY (RFC 3516): a part's content with its Content-Transfer-Encoding undone, for
`BINARY[part]<partial>` and `BINARY.SIZE[part]`.

`BINARY[]` is the whole message as stored; a multipart or message/rfc822 part is given
as its octets (a transfer encoding applies to leaves only); base64 is decoded leniently
(characters outside its alphabet are skipped, a missing pad is supplied), as mail
clients decode it. Data holding NUL goes out as a literal8 (`~{n}`). An encoding other
than 7bit, 8bit, binary, base64 and quoted-printable raises `UnknownEncoding`, which the
FETCH answers with NO [UNKNOWN-CTE].

`stored_form` is what APPEND keeps of a message sent as a literal8 (RFC 3516 4.3: the
server may change the transfer encoding, losing no data): as Dovecot does, each leaf part
labelled `Content-Transfer-Encoding: binary` is re-encoded as base64, so BODY[], RFC822
and BODYSTRUCTURE describe text a plain literal can carry, while BINARY[part] still gives
the original octets. Pure: works on a message in memory, never keeps it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from gateway.imap.protocol import FetchAttribute, FetchKind, Literal8, Value
from gateway.imap.render.fetch import MimePart, find_part, parse_message

_IDENTITY = frozenset({"7bit", "8bit", "binary"})
_BASE64_HEADER = b"Content-Transfer-Encoding: base64\r\n"
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class UnknownEncoding(Exception):
    """A part's Content-Transfer-Encoding is none this server can undo."""


def _base64(data: bytes) -> bytes:
    clean = bytes(c for c in data.split(b"=", 1)[0] if c in _BASE64_ALPHABET)
    clean = clean[: len(clean) - (len(clean) % 4 == 1)]  # a lone sixth of a byte is noise
    return base64.b64decode(clean + b"=" * (-len(clean) % 4))


def decoded(raw: bytes, parse: Callable[[], MimePart], part: tuple[int, ...]) -> bytes:
    """The octets of BINARY[part]: b"" for a part that does not exist."""
    if not part:
        return raw
    target = find_part(parse(), part)
    if target is None:
        return b""
    if target.children or target.embedded is not None:
        return target.body
    encoding = target.content.transfer_encoding
    if encoding in _IDENTITY:
        return target.body
    if encoding == "base64":
        return _base64(target.body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(target.body)
    raise UnknownEncoding(encoding)


def item(attribute: FetchAttribute, raw: bytes, parse: Callable[[], MimePart]) -> Value:
    """The value of a BINARY or BINARY.SIZE item."""
    part = attribute.section.part if attribute.section is not None else ()
    data = decoded(raw, parse, part)
    if attribute.kind is FetchKind.BINARY_SIZE:
        return len(data)
    if attribute.partial is not None:
        origin, length = attribute.partial
        data = data[origin : origin + length]
    return Literal8(data) if b"\x00" in data else data


def stored_form(message: bytes) -> bytes:
    """`message` with its binary leaf parts re-encoded as base64 (unchanged if it has none)."""
    root = parse_message(message)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, octets) in message order
    _binary_leaves(root, edits, root=True)
    if not edits:
        return message
    out: list[bytes] = []
    at = 0
    for start, end, octets in sorted(edits):
        out += [message[at:start], octets]
        at = end
    out.append(message[at:])
    return b"".join(out)


def _binary_leaves(part: MimePart, edits: list[tuple[int, int, bytes]], *, root: bool) -> None:
    for child in part.children:
        _binary_leaves(child, edits, root=False)
    if part.embedded is not None:
        _binary_leaves(part.embedded, edits, root=False)
    if part.children or part.embedded is not None:
        return
    if part.content.transfer_encoding != "binary":
        return
    field = next((raw for name, raw in part.fields if name == "content-transfer-encoding"), None)
    if field is None:
        return
    header_start = part.start - len(part.header)
    at = part.header.find(field)
    edits.append((header_start + at, header_start + at + len(field), _BASE64_HEADER))
    lines = base64.encodebytes(part.body).rstrip(b"\n").replace(b"\n", b"\r\n")
    # A part inside a multipart ends before the CRLF of the next delimiter; the message's
    # own body runs to its end, which is left ending a line.
    edits.append((part.start, part.end, lines + b"\r\n" if root else lines))
