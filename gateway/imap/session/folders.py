"""Mailbox names as LIST and LSUB see them: patterns with `*` and `%`, and the folder tree
with its missing parents and child attributes. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.imap.backend import FolderInfo
from gateway.imap.session.reply import DELIMITER


def list_pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """The regular expression of a LIST reference and pattern (INBOX case-insensitive)."""
    full = reference + pattern
    if full.upper().startswith("INBOX") and (len(full) == 5 or full[5] in (DELIMITER, "*", "%")):
        full = "INBOX" + full[5:]
    regex = "".join(
        ".*" if ch == "*" else f"[^{re.escape(DELIMITER)}]*" if ch == "%" else re.escape(ch)
        for ch in full
    )
    return re.compile(regex, re.DOTALL)


_CHILD_ATTRIBUTES = frozenset({"\\haschildren", "\\hasnochildren"})


def folder_tree(folders: Sequence[FolderInfo]) -> dict[str, tuple[str, ...]]:
    """Every folder and every missing parent (\\Noselect) with its LIST attributes.

    Whether a folder has children is decided here, from the whole tree, and always comes
    last; what storage said about it is dropped, so every backend lists alike.
    """
    names = {
        f.name: tuple(a for a in f.attributes if a.lower() not in _CHILD_ATTRIBUTES)
        for f in folders
    }
    parents = {
        DELIMITER.join(name.split(DELIMITER)[:i])
        for name in names
        for i in range(1, name.count(DELIMITER) + 1)
    }
    return {
        name: (
            *names.get(name, ("\\Noselect",)),
            "\\HasChildren" if name in parents else "\\HasNoChildren",
        )
        for name in sorted(names.keys() | parents, key=lambda n: (n != "INBOX", n))
    }
