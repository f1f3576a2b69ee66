"""Correspondents' OpenPGP keys the bubble's root publishes (`bridge.published_key`).

Published keys arrive with the directory replica (`gateway.recipients` syncs every
record the relays hold); every `interval` seconds `DirectoryKeys` opens the records it
has not seen yet, keeps those that are key statements and verify against the pinned
root, and answers `peer(address)` from memory, so RCPT does no I/O for them. A record
that opens as a key statement but is not signed by the root, or holds a key pgpy cannot
read, is ignored and logged (without the address); a withdrawal, the highest version,
takes the key away. Keys are logged by fingerprint only, as elsewhere in `gateway.pgp`.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.directory import DirectoryRecord
from bridge.errors import DirectoryError
from bridge.published_key import PublishedKey
from gateway.pgp.keys import OpenPgpKeyError, PeerKey, parse_key, peer_key
from gateway.store.directory_cache import DirectoryCache
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)


def published_keys(
    records: list[DirectoryRecord], directory_key: bytes, trusted_roots: tuple[bytes, ...]
) -> tuple[dict[str, PeerKey], list[str]]:
    """The keys published in `records` by address, and why some key statements were
    left out (not signed by the root, a key this gateway cannot read)."""
    keys: dict[str, PeerKey] = {}
    problems = []
    for record in records:
        try:
            statement = PublishedKey.open_any(record, directory_key, trusted_roots)
        except DirectoryError:
            problems.append("a published key record that is not signed by the pinned root")
            continue
        if statement is None or statement.key is None:
            continue
        try:
            keys[statement.address] = peer_key(parse_key(statement.key))
        except OpenPgpKeyError as e:
            problems.append(f"a published key it cannot use ({e})")
    return keys, problems


class DirectoryKeys(PeriodicJob):
    def __init__(
        self, cache: DirectoryCache, directory_key: bytes, trusted_roots: tuple[bytes, ...],
        interval: float,
    ) -> None:
        super().__init__(interval)
        self._cache = cache
        self._key = directory_key
        self._roots = trusted_roots
        self._seen: dict[bytes, tuple[int, str | None, PeerKey | None]] = {}
        self._keys: dict[str, PeerKey] = {}

    def peer(self, address: str) -> PeerKey | None:
        """The key the directory publishes for `address` (normalized), if any."""
        return self._keys.get(address)

    async def run_once(self) -> bool:
        await asyncio.to_thread(self.refresh)
        return False

    def refresh(self) -> None:
        seen = {}
        for record in self._cache.all():
            held = self._seen.get(record.lookup_id)
            if held is not None and held[0] == record.version:
                seen[record.lookup_id] = held
                continue
            (address, key), problems = self._open(record)
            for problem in problems:
                log.warning("openpgp: the replica holds %s; ignored", problem)
            seen[record.lookup_id] = (record.version, address, key)
        keys = {a: k for _, a, k in seen.values() if a is not None and k is not None}
        for address, key in keys.items():
            if self._keys.get(address) != key:
                log.info("openpgp: the directory publishes key %s", key.fingerprint)
        for address, key in self._keys.items():
            if address not in keys:
                log.info("openpgp: the directory no longer publishes key %s", key.fingerprint)
        self._seen, self._keys = seen, keys

    def _open(
        self, record: DirectoryRecord
    ) -> tuple[tuple[str | None, PeerKey | None], list[str]]:
        found, problems = published_keys([record], self._key, self._roots)
        if not found:
            return (None, None), problems
        ((address, key),) = found.items()
        return (address, key), problems
