"""Mailbox names as LIST and LSUB see them: patterns with `*` and `%`, the folder tree
with its missing parents and child attributes, the subscribed names, and what an
extended LIST selects (`extended_listing`). Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


SPECIAL_USES = frozenset(
    {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"}
)
"""The special-use attributes of RFC 6154, lower case."""


@dataclass(frozen=True, slots=True)
class Listed:
    """One name an extended LIST answers with: its attributes, whether it is a mailbox
    one can select (STATUS is returned only for those), and CHILDINFO (RFC 5258)."""

    name: str
    attributes: tuple[str, ...]
    selectable: bool
    child_info: tuple[str, ...] = ()


def extended_listing(
    folders: Sequence[FolderInfo],
    subscribed: Sequence[str],
    patterns: Sequence[re.Pattern[str]],
    select: frozenset[str],
    *,
    mark_subscribed: bool,
) -> list[Listed]:
    """What LIST-EXTENDED (RFC 5258, RFC 6154 SPECIAL-USE) lists for these patterns.

    The selection options narrow the names (SUBSCRIBED: the subscribed ones, existing or
    not; SPECIAL-USE: the folders with a special-use attribute; both: both; REMOTE adds
    nothing, there are no remote mailboxes). A name that is not a folder is
    \\NonExistent (which implies \\Noselect). With RECURSIVEMATCH, a name the patterns
    match that has a selected descendant they do not match is listed too, with CHILDINFO
    naming the options its descendant meets."""
    tree = folder_tree(folders)
    real = {f.name for f in folders}
    subscribed_names = set(subscribed)

    def attributes(name: str) -> tuple[str, ...]:
        if name in real:
            attrs = tree[name]
        elif name in tree:  # a superior of folders, not itself a folder
            attrs = ("\\NonExistent", *(a for a in tree[name] if a != "\\Noselect"))
        else:
            attrs = ("\\NonExistent",)
        if mark_subscribed and name in subscribed_names:
            attrs = (*attrs, "\\Subscribed")
        return attrs

    def special(name: str) -> bool:
        return any(a.lower() in SPECIAL_USES for a in tree.get(name, ()))

    criteria: list[str] = []
    candidates = set(tree)
    if "SUBSCRIBED" in select:
        criteria.append("SUBSCRIBED")
        candidates = subscribed_names
    if "SPECIAL-USE" in select:
        criteria.append("SPECIAL-USE")
        candidates = {name for name in candidates if special(name)}

    def matches(name: str) -> bool:
        return any(p.fullmatch(name) for p in patterns)

    child_info: dict[str, tuple[str, ...]] = {}
    if "RECURSIVEMATCH" in select:
        for name in candidates:
            if matches(name):
                continue
            parts = name.split(DELIMITER)
            for i in range(1, len(parts)):
                superior = DELIMITER.join(parts[:i])
                if matches(superior):
                    child_info[superior] = tuple(criteria)
    names = {name for name in candidates if matches(name)} | child_info.keys()
    return [
        Listed(name, attributes(name), name in real, child_info.get(name, ()))
        for name in sorted(names, key=list_order)
    ]
