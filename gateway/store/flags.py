"""The `flags` column of a message row: flags in canonical case, as text and parsed back.

Flags are stored as one space-separated text, sorted, system flags in their RFC 3501
case; `\\Recent` belongs to sessions and is never stored. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.store.db import InvalidValue

_SYSTEM_FLAGS = {
    flag.lower(): flag for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}
DELETED = "\\Deleted"


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical case; `\\Recent` (session-only) dropped."""
    result: set[str] = set()
    for flag in flags:
        if not flag or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in flag):
            raise InvalidValue("flag is empty or holds a space or control character")
        lowered = flag.lower()
        if lowered == "\\recent":
            continue
        result.add(_SYSTEM_FLAGS.get(lowered, flag))
    return frozenset(result)


def flags_text(flags: frozenset[str]) -> str:
    """The column's text of canonical flags."""
    return " ".join(sorted(flags))


class FlagCache:
    """Parses flag columns, sharing one frozenset per distinct value (most repeat)."""

    def __init__(self) -> None:
        self._parsed: dict[str, frozenset[str]] = {}

    def __call__(self, text: str) -> frozenset[str]:
        parsed = self._parsed.get(text)
        if parsed is None:
            parsed = self._parsed[text] = frozenset(text.split())
        return parsed
