"""Folder metadata kept in memory between SELECTs: `SnapshotCache` and `merged`.

SELECT numbers every message, so it needs every message's metadata (UID, flags, date,
size, modseq). Read from the database that is a scan of the folder's rows, each on its
own pages beside its sealed blob, and a decode per row: O(messages). The cache keeps
the last snapshot of recently selected folders and brings it up to date with the
changes after its modseq, O(changes), as Dovecot keeps its index file; a QRESYNC
resync of an unchanged folder then reads one folder row and finds nothing changed.

It is coherent across processes because of the modseqs: every change to a folder takes
a new modseq and expunges are logged with theirs, so what changed after a cached
modseq is exactly what the cached copy lacks. Entries are keyed by account, folder row
id and UIDVALIDITY, so a folder deleted and created again, or renamed, never matches an
old one. It holds metadata only, never message content, sealed or open, and at most
`max_messages` messages' worth in all (the least recently used folders go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

from gateway.imap.backend import FolderChanges, FolderSnapshot

# About 30 MB of metadata: ten folders of 10,000 messages.
MAX_CACHED_MESSAGES = 100_000


class SnapshotCache:
    """The latest known snapshot of recently selected folders; thread-safe."""

    def __init__(self, max_messages: int = MAX_CACHED_MESSAGES) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int], tuple[int, FolderSnapshot]] = OrderedDict()
        self._messages = 0
        self.max_messages = max_messages

    def get(self, folder: tuple[int, int], uid_validity: int) -> FolderSnapshot | None:
        """The snapshot kept for `folder` (account id, folder row id) with this
        UIDVALIDITY, if any."""
        with self._lock:
            entry = self._entries.get(folder)
            if entry is None or entry[0] != uid_validity:
                return None
            self._entries.move_to_end(folder)
            return entry[1]

    def put(self, folder: tuple[int, int], snapshot: FolderSnapshot) -> None:
        """Keep `snapshot` unless an entry at least as new is there already."""
        with self._lock:
            old = self._entries.pop(folder, None)
            if old is not None:
                self._messages -= len(old[1].messages)
                if (
                    old[0] == snapshot.uid_validity
                    and old[1].highest_modseq > snapshot.highest_modseq
                ):
                    snapshot = old[1]
            self._entries[folder] = (snapshot.uid_validity, snapshot)
            self._messages += len(snapshot.messages)
            while self._messages > self.max_messages and self._entries:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._messages -= len(evicted.messages)


def merged(snapshot: FolderSnapshot, name: str, changes: FolderChanges) -> FolderSnapshot:
    """`snapshot` brought up to `changes` (what changed after its modseq), named `name`
    (the folder's name now)."""
    gone = set(changes.expunged)
    changed = {m.uid: m for m in changes.changed}
    messages = snapshot.messages
    if gone or changed:
        kept = [changed.pop(m.uid, m) for m in messages if m.uid not in gone]
        new = sorted((m for m in changed.values() if m.uid not in gone), key=lambda m: m.uid)
        if new and kept and new[0].uid < kept[-1].uid:  # never, as UIDs only grow
            kept = sorted(kept + new, key=lambda m: m.uid)
            new = []
        messages = (*kept, *new)
    return replace(
        snapshot,
        name=name,
        uid_next=changes.uid_next,
        highest_modseq=changes.highest_modseq,
        messages=messages,
    )


_CACHES: dict[str, SnapshotCache] = {}
_CACHES_LOCK = threading.Lock()


def snapshot_cache(key: str) -> SnapshotCache:
    """The one cache of this process for the database named `key` (its URL)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = SnapshotCache()
        return cache
