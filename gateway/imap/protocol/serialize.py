"""Responses to octets: `serialize(response) -> bytes`, CRLF included; `encode_value`
for one value.

Strings are quoted when they can be, else sent as literals; a response IMAP forbids
(negative number, multi-line text) raises `LocalProtocolError`. A literal may not hold
NUL (RFC 3501 CHAR8): as Dovecot does, each NUL of one goes out as 0x80, the length
unchanged; octets that must arrive intact with NUL are a `Literal8`. Pure: no I/O.
"""

from __future__ import annotations

from gateway.imap.protocol.errors import LocalProtocolError
from gateway.imap.protocol.responses import (
    Adjacent,
    Code,
    Literal8,
    Raw,
    Response,
    Serialized,
    Tagged,
    Untagged,
    UntaggedStatus,
    Value,
)

_QUOTABLE = frozenset(range(0x20, 0x7F))
_MAX_QUOTED = 1024


def literal(data: bytes) -> bytes:
    """`{n}` and `data`, any NUL in it sent as 0x80."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"\x80")
    return b"{%d}\r\n%b" % (len(data), data)


def _write_value(value: Value, out: list[bytes]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, bool):
        raise LocalProtocolError("IMAP has no boolean values")
    elif isinstance(value, int):
        if value < 0:
            raise LocalProtocolError("IMAP numbers are never negative")
        out.append(b"%d" % value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
        if len(data) <= _MAX_QUOTED and _QUOTABLE.issuperset(data):
            out.append(b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
        else:
            out.append(literal(data))
    elif isinstance(value, bytes):
        if value:
            out.append(literal(value))
        else:
            out.append(b'""')
    elif isinstance(value, Literal8):
        out.append(b"~{%d}\r\n" % len(value.data))
        out.append(value.data)
    elif isinstance(value, Adjacent):
        for item in value.items:
            _write_value(item, out)
    else:
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _write_value(item, out)
        out.append(b")")


def encode_value(value: Value) -> bytes:
    """The octets of one value, as a response writes it."""
    out: list[bytes] = []
    _write_value(value, out)
    return b"".join(out)


def _resp_text(text: str, code: Code | None, out: list[bytes]) -> None:
    if code is not None:
        out.append(b"[" + code.name.encode("ascii"))
        for arg in code.args:
            out.append(b" ")
            _write_value(arg, out)
        out.append(b"] ")
    if not text or "\r" in text or "\n" in text or (code is None and text.startswith("[")):
        raise LocalProtocolError("response text must be one non-empty line")
    out.append(text.encode("utf-8"))


def serialize(response: Response) -> bytes:
    """The octets of one response, CRLF included."""
    if isinstance(response, Serialized):
        return response.data
    out: list[bytes] = []
    if isinstance(response, Tagged):
        out.append(response.tag.encode("ascii") + b" " + response.status.value.encode() + b" ")
        _resp_text(response.text, response.code, out)
    elif isinstance(response, UntaggedStatus):
        out.append(b"* " + response.status.value.encode() + b" ")
        _resp_text(response.text, response.code, out)
    elif isinstance(response, Untagged):
        out.append(b"*")
        for value in response.values:
            out.append(b" ")
            _write_value(value, out)
    else:
        if "\r" in response.text or "\n" in response.text:
            raise LocalProtocolError("continuation text must be one line")
        out.append(b"+ " + response.text.encode("utf-8"))
    out.append(b"\r\n")
    return b"".join(out)
