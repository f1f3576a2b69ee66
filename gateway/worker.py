"""A background job of the gateway: one pass when woken, or every `interval` seconds
(or as often as the job's `next_wait` says).

A pass that fails unexpectedly is logged by type only (exception text may carry
data) and the job goes on; it never dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class PeriodicJob:
    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> bool:
        """One pass; True if more work is waiting and the next pass should start at once."""
        raise NotImplementedError

    def next_wait(self) -> float:
        """Seconds to sleep after a pass unless woken (a job that knows better overrides it)."""
        return self._interval

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                more = await self.run_once()
            except Exception as e:  # noqa: BLE001 - the job must outlive one bad pass
                log.error("%s: pass failed (%s)", type(self).__name__, type(e).__name__)
                more = False
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.next_wait())
