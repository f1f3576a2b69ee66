"""Source folder names to the bubble's folder names.

A source folder with a SPECIAL-USE attribute (RFC 6154) becomes the bubble's folder
of that use: Sent, Drafts, Trash, Junk or Archive; without one, a few names that
mail programs give those folders are recognised ("Sent Items", "Deleted Messages",
"Spam", …). Hierarchy is kept: the source's delimiter becomes "/", the bubble's.
IMAP and Maildir++ folder names travel in modified UTF-7 (RFC 3501 5.1.3):
`decode_mutf7` (the IMAP server's codec). Virtual folders (`\\All`, `\\Flagged`: every
message again, as Gmail's "All Mail") are not migrated. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.imap.protocol import decode_mailbox

# SPECIAL-USE attribute (lower-case) -> the bubble's folder, with the attribute as it lists it
SPECIAL_FOLDERS = {
    "\\sent": ("Sent", "\\Sent"),
    "\\drafts": ("Drafts", "\\Drafts"),
    "\\trash": ("Trash", "\\Trash"),
    "\\junk": ("Junk", "\\Junk"),
    "\\archive": ("Archive", "\\Archive"),
}
VIRTUAL = frozenset({"\\all", "\\flagged"})
_KNOWN_NAMES = {
    "sent": "\\sent", "sent items": "\\sent", "sent messages": "\\sent", "sent mail": "\\sent",
    "drafts": "\\drafts", "draft": "\\drafts",
    "trash": "\\trash", "deleted items": "\\trash", "deleted messages": "\\trash",
    "junk": "\\junk", "spam": "\\junk", "junk e-mail": "\\junk", "junk email": "\\junk",
    "archive": "\\archive", "archives": "\\archive",
}


class FolderNameError(ValueError):
    """A folder name that is not valid modified UTF-7."""


def decode_mutf7(name: str) -> str:
    """A modified UTF-7 folder name in Unicode; `FolderNameError` if malformed."""
    try:
        return decode_mailbox(name.encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        raise FolderNameError("folder name is not valid modified UTF-7") from None


@dataclass(frozen=True)
class Target:
    name: str  # the bubble folder
    special_use: str | None


def target_folder(path: Iterable[str], attributes: Iterable[str] = ()) -> Target | None:
    """The bubble folder for a source folder given as its hierarchy's names (decoded)
    and attributes; None for a virtual folder."""
    parts = [part.replace("/", "_") for part in path if part]
    lowered = {attribute.lower() for attribute in attributes}
    if lowered & VIRTUAL:
        return None
    if not parts or (len(parts) == 1 and parts[0].upper() == "INBOX"):
        return Target("INBOX", None)
    special = next((a for a in sorted(lowered) if a in SPECIAL_FOLDERS), None)
    if special is None and (len(parts) == 1 or (len(parts) == 2 and parts[0].upper() == "INBOX")):
        special = _KNOWN_NAMES.get(parts[-1].lower())
    if special is not None:
        return Target(*SPECIAL_FOLDERS[special])
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return Target("/".join(parts), None)
