"""Who is in the bubble: recipient and sender lookups against the signed directory.

The gateway keeps a replica of the relays' sealed directory records in its store,
so RCPT needs no network and a relay outage does not stop submission. A miss in
the replica asks the relays live. Every record is verified against the pinned
root before it is used; nothing unsigned is ever trusted. The replica only moves
forward: a record replaces another only with a higher version, whichever relay
serves it, so an old record replayed by a relay cannot roll an address back to
keys that were rotated away or revoked.

    UnknownAddress        no trusted entry: 550 5.1.1
    └── RevokedAddress    the entry says the address is revoked: 550 5.1.1, saying so
    DirectoryUnavailable  no entry here and no relay could be asked: 451 4.4.3
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from bridge.directory import (
    DirectoryEntry,
    DirectoryRecord,
    lookup_id,
    normalize_address,
    open_record,
)
from bridge.errors import DirectoryError, RelayError
from bridge.relay.client import RelayClient
from gateway.store.directory_cache import DirectoryCache
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

MAX_OPENED = 10_000  # opened entries kept in memory; the cache starts over beyond this
# How long a record read from the replica answers again without reading it anew. MAIL and
# RCPT would otherwise read the store on the event loop for every transaction; a change
# made by another process (a rotation, a revocation synced by it) shows after this long.
REPLICA_READ_SECONDS = 2.0


class UnknownAddress(Exception):
    """No trusted directory entry exists for this address."""

    smtp_reply = "550 5.1.1 No such recipient in this bubble"


class RevokedAddress(UnknownAddress):
    """The directory's newest entry for this address revokes it (and all its keys)."""

    smtp_reply = "550 5.1.1 This address has been revoked in the bubble directory"


class DirectoryUnavailable(Exception):
    """The replica has no entry and no relay could be asked."""

    smtp_reply = "451 4.4.3 Directory unavailable; try again later"


class Recipients(PeriodicJob):
    def __init__(
        self,
        cache: DirectoryCache,
        relays: Sequence[RelayClient],
        directory_key: bytes,
        trusted_roots: tuple[bytes, ...],
        sync_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sync_interval)
        self._cache = cache
        self._clock = clock
        # Opened entries by record: verifying a record costs two signature checks and a
        # decryption, and RCPT needs the same few entries again and again.
        self._opened: dict[DirectoryRecord, DirectoryEntry] = {}
        # Replica reads by lookup id: (clock time read, record or None).
        self._read: dict[bytes, tuple[float, DirectoryRecord | None]] = {}
        self._relays = list(relays)
        self._key = directory_key
        self._roots = trusted_roots

    async def run_once(self) -> bool:
        await self.sync()
        return False

    async def sync(self) -> int:
        """Bring the replica forward from every relay that answers; returns rows changed."""
        changed = 0
        for relay in self._relays:
            try:
                records = await relay.directory()
            except RelayError as e:
                log.info("directory sync: relay %s unavailable (%s)", relay.url, type(e).__name__)
                continue
            good = []
            for record in records:
                try:
                    record.verify_publisher(self._roots)
                except DirectoryError:
                    log.warning("directory sync: dropped a record not signed by the pinned root")
                    continue
                good.append(record)
            changed += self._put(good)
        return changed

    def _put(self, records: Sequence[DirectoryRecord]) -> int:
        changed = self._cache.put_many(records)
        if changed:
            self._read.clear()
        return changed

    def _replica(self, lid: bytes) -> DirectoryRecord | None:
        """The replica's record for `lid`, read from the store at most every
        `REPLICA_READ_SECONDS` (and again after this process changed the replica)."""
        now = self._clock()
        seen = self._read.get(lid)
        if seen is not None and now - seen[0] < REPLICA_READ_SECONDS:
            return seen[1]
        record = self._cache.get(lid)
        if len(self._read) >= MAX_OPENED:
            self._read.clear()
        self._read[lid] = (now, record)
        return record

    def _open(self, record: DirectoryRecord) -> DirectoryEntry:
        entry = self._opened.get(record)
        if entry is None:
            entry = open_record(record, self._key, self._roots)
            if len(self._opened) >= MAX_OPENED:
                self._opened.clear()
            self._opened[record] = entry
        return entry

    @staticmethod
    def _usable(entry: DirectoryEntry) -> DirectoryEntry:
        if entry.revoked:
            raise RevokedAddress(entry.address)
        return entry

    def _lookup_id(self, address: str) -> bytes:
        try:
            return lookup_id(self._key, normalize_address(address))
        except ValueError:
            raise UnknownAddress(address) from None

    async def resolve(self, address: str) -> DirectoryEntry:
        """The verified entry for `address`; UnknownAddress, RevokedAddress or
        DirectoryUnavailable otherwise."""
        lid = self._lookup_id(address)
        cached = self._replica(lid)
        if cached is not None:
            try:
                return self._usable(self._open(cached))
            except DirectoryError:
                log.warning("directory replica holds a record that does not verify; asking relays")
        return self._usable(await self._ask_relays(address, lid, first=True))

    async def refresh(self, address: str) -> DirectoryEntry:
        """Ask every relay for a newer entry than the replica's (a sender may have rotated).

        Returns the newest verified entry, revoked or not; UnknownAddress or
        DirectoryUnavailable as `resolve`.
        """
        return await self._ask_relays(address, self._lookup_id(address), first=False)

    async def _ask_relays(self, address: str, lid: bytes, *, first: bool) -> DirectoryEntry:
        """The relays' records for `lid`; the newest verified one is kept in the replica.

        With `first`, the first verified record ends the search (RCPT must not wait
        for every relay; the periodic sync brings the replica to the newest later).
        """
        reached = False
        for relay in self._relays:
            try:
                record = await relay.lookup(lid)
            except RelayError:
                continue
            reached = True
            if record is None:
                continue
            try:
                self._open(record)
            except DirectoryError:
                log.warning("relay %s served a directory record that does not verify", relay.url)
                continue
            self._put([record])
            if first:
                break
        self._read.pop(lid, None)
        newest = self._replica(lid)
        if newest is not None:
            try:
                return self._open(newest)
            except DirectoryError:
                pass
        if not reached:
            raise DirectoryUnavailable(address)
        raise UnknownAddress(address)
