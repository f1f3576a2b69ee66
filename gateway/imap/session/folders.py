"""Mailbox names as LIST and LSUB see them: patterns with `*` and `%`, the folder tree
with its missing parents and child attributes, the subscribed names. Pure functions."""

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
        for name in sorted(names.keys() | parents, key=list_order)
    }


def list_order(name: str) -> tuple[bool, str]:
    """LIST and LSUB order: INBOX first, then by name."""
    return name != "INBOX", name


def subscribed_tree(
    tree: dict[str, tuple[str, ...]], subscribed: Sequence[str], pattern: re.Pattern[str]
) -> dict[str, tuple[str, ...]]:
    """What LSUB lists (RFC 3501 6.3.9): the subscribed names with their LIST attributes
    (\\Noselect when the folder does not exist), and, \\Noselect, each superior the
    pattern matches where it does not match the subscribed name (`%` over "a/b" gives "a")."""
    out: dict[str, tuple[str, ...]] = {}
    names = set(subscribed)
    for name in subscribed:
        out[name] = tree.get(name, ("\\Noselect",))
        if pattern.fullmatch(name):
            continue
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):
            superior = DELIMITER.join(parts[:i])
            if superior not in names and pattern.fullmatch(superior):
                out.setdefault(superior, ("\\Noselect",))
    return dict(sorted(out.items(), key=lambda item: list_order(item[0])))
