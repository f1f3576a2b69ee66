"""Which home relays are drained: the gateway stops depositing to them (`bridge.drain`).

Drain statements arrive with the directory replica (`gateway.recipients` syncs every
record the relays hold); every `interval` seconds `RelayDrains` reads, for each relay
this gateway knows, the statement about it from the replica, verifies it against the
pinned root and keeps whether it is drained. Deposits ask `drained(url)`; fetching is
not affected, so what a drained relay still holds is read as before. A change is
logged with the relay's URL (no address). Memory only, beyond the replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from bridge.drain import DrainStatement, drain_lookup_id, relay_key
from bridge.errors import DirectoryError
from gateway.store.directory_cache import DirectoryCache
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)


class RelayDrains(PeriodicJob):
    def __init__(
        self, cache: DirectoryCache, relays: Callable[[], Iterable[str]], directory_key: bytes,
        trusted_roots: tuple[bytes, ...], interval: float,
    ) -> None:
        super().__init__(interval)
        self._cache = cache
        self._relays = relays
        self._key = directory_key
        self._roots = trusted_roots
        self._drained: set[str] = set()

    def drained(self, url: str) -> bool:
        return relay_key(url) in self._drained

    async def run_once(self) -> bool:
        await asyncio.to_thread(self.refresh)
        return False

    def refresh(self) -> None:
        drained = set()
        for url in {relay_key(u) for u in self._relays()}:
            record = self._cache.get(drain_lookup_id(self._key, url))
            if record is None:
                continue
            try:
                statement = DrainStatement.from_record(record, url, self._key, self._roots)
            except DirectoryError:
                log.warning("drains: the replica holds a statement for %s that does not verify",
                            url)
                continue
            if statement.draining:
                drained.add(url)
        for url in sorted(drained - self._drained):
            log.info("drains: relay %s is drained; no deposits go there", url)
        for url in sorted(self._drained - drained):
            log.info("drains: relay %s is no longer drained", url)
        self._drained = drained
