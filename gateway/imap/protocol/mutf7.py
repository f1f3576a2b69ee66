"""Modified UTF-7, the wire form of mailbox names (RFC 3501 section 5.1.3)."""

from __future__ import annotations

import base64
import binascii
import re


def encode_mailbox(name: str) -> str:
    """A mailbox name as sent on the wire (ASCII, `&` ... `-` for everything else)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name from the wire; ValueError when it is not modified UTF-7."""
    if not raw.isascii():
        raise ValueError("mailbox names are 7-bit (modified UTF-7)")
    text = raw.decode("ascii")
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift")
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        if not re.fullmatch(r"[A-Za-z0-9+/]+", b64):
            raise ValueError("invalid modified UTF-7")
        try:
            utf16 = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            decoded = utf16.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError("invalid modified UTF-7") from exc
        out.append(decoded)
    return "".join(out)


def normalize_mailbox(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name
