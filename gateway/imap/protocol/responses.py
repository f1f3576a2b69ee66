"""Responses (server -> client) and the values inside them, as typed data.

`serialize` turns them into octets. Pure: imports nothing from `gateway`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"
    PREAUTH = "PREAUTH"


@dataclass(frozen=True, slots=True)
class Raw:
    """Octets sent verbatim: atoms, numbers already formatted, flags, fetch item names."""

    data: bytes

    @classmethod
    def of(cls, text: str) -> Raw:
        return cls(text.encode("ascii"))


@dataclass(frozen=True, slots=True)
class Literal8:
    """Octets sent as a literal8, `~{n}` (RFC 3516): they may hold NUL, which a literal may not."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Adjacent:
    """Values written one after the other without separators (multipart BODYSTRUCTURE)."""

    items: tuple[Value, ...]


# str: a string, quoted when it can be, else a literal (non-ASCII is sent as UTF-8, and
# surrogate escapes give back the original octets); bytes: always a literal; None: NIL.
Value = None | int | str | bytes | Raw | Literal8 | Adjacent | tuple["Value", ...]


@dataclass(frozen=True, slots=True)
class Code:
    """A response code, `[NAME args]`: `Code("UIDVALIDITY", (7,))`."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class Tagged:
    """`tag OK [code] text`: the completion of one command."""

    tag: str
    status: Status
    text: str
    code: Code | None = None


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """`* OK [code] text`, `* BYE text`, `* BAD text`."""

    status: Status
    text: str
    code: Code | None = None


@dataclass(frozen=True, slots=True)
class Untagged:
    """`* value value ...`: server data such as `* 3 EXISTS` or `* 1 FETCH (...)`."""

    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Continuation:
    """`+ text`: go ahead with a literal, or a SASL challenge / IDLE acknowledgement."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Serialized:
    """Untagged responses already written as octets, each with its CRLF: the FETCH
    responses of a batch of messages, rendered straight to octets."""

    data: bytes


Response = Tagged | UntaggedStatus | Untagged | Continuation | Serialized
