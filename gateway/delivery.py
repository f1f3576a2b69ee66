"""The delivery worker: pushes sealed envelopes from the durable outbox to relays.

An outbox entry is removed only after a relay has acknowledged the deposit (201 or
200 for a repeat), so a crash or a dead relay never loses an accepted message; a
deposit repeated after a crash is harmless because relays store envelopes by id.
Relays are tried in the recipient's priority order; when all fail, the entry is
retried later with exponential backoff. A pass loads due entries up to
`batch_bytes` of envelopes (at least one), so memory follows the budget, not a count.
The outbox records which relay took each envelope, to be asked about it after
`status_check_interval` seconds (`gateway.undelivered`). An envelope that no relay
took within `give_up` seconds of its submission is given up: it leaves the outbox and
its sender is told in INBOX (`gateway.undelivered` writes the notice).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bridge.errors import RelayError, RelayRejected
from bridge.keys import GatewayCredential
from bridge.relay.client import RelayClient
from gateway.store.outbox import Outbox, OutboxEntry
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the `attempts`-th failure (1, 2, 3, ...)."""
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))


class DeliveryWorker(PeriodicJob):
    def __init__(
        self,
        outbox: Outbox,
        credential: GatewayCredential,
        client_for: Callable[[str], RelayClient],
        *,
        retry_initial: float,
        retry_max: float,
        concurrency: int = 8,
        batch_bytes: int = 64 * 1024 * 1024,
        status_check_interval: float = 3600.0,
        give_up: float = 5 * 86400.0,
    ) -> None:
        super().__init__(retry_initial)
        self._outbox = outbox
        self._credential = credential
        self._client_for = client_for
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._slots = asyncio.Semaphore(concurrency)
        self._batch_bytes = batch_bytes
        self._status_check = timedelta(seconds=status_check_interval)
        self._give_up = timedelta(seconds=give_up)

    async def run_once(self) -> bool:
        """Try the due entries that fit the byte budget once; True if any were delivered.

        Up to `concurrency` deposits run at once; the entries the relays took are
        removed from the outbox together, in one transaction. More may be due when
        some were delivered (the budget cut the batch); a failed entry is not due
        again before its backoff, so the passes stop once nothing goes out.
        """
        due = await asyncio.to_thread(self._outbox.due, datetime.now(UTC), self._batch_bytes)
        taken = await asyncio.gather(*(self._deliver(entry) for entry in due))
        relays = {entry.id: url for entry, url in zip(due, taken, strict=True) if url}
        del due, taken
        await asyncio.to_thread(
            functools.partial(
                self._outbox.delivered, *relays, relays=relays,
                check_at=datetime.now(UTC) + self._status_check,
            )
        )
        return bool(relays)

    async def _deliver(self, entry: OutboxEntry) -> str | None:
        """Deposit on the first relay that takes it; that relay's URL, or None."""
        async with self._slots:
            return await self._deposit(entry)

    async def _deposit(self, entry: OutboxEntry) -> str | None:
        errors = []
        for url in entry.relays:
            try:
                await self._client_for(url).deposit(entry.envelope, self._credential)
            except RelayRejected as e:  # e.g. 403 once this gateway's credential is revoked
                errors.append(f"{url}: {e.status} {e.reason}")
                continue
            except RelayError as e:
                errors.append(f"{url}: {type(e).__name__}")
                continue
            log.debug("delivery: envelope %s deposited", entry.envelope_id.hex()[:8])
            return url
        attempts = entry.attempts + 1
        reason = "; ".join(errors) or "no relay known"
        now = datetime.now(UTC)
        if now - entry.created_at >= self._give_up:
            await asyncio.to_thread(self._outbox.give_up, entry.envelope_id, "refused", now)
            log.warning("delivery: envelope %s given up after %d attempts (%s)",
                        entry.envelope_id.hex()[:8], attempts, reason)
            return None
        delay = backoff(attempts, self._retry_initial, self._retry_max)
        at = now + timedelta(seconds=delay)
        await asyncio.to_thread(self._outbox.retry_later, entry.id, at, reason[:500])
        log.info(
            "delivery: envelope %s not deposited (%s); retry in %.0fs",
            entry.envelope_id.hex()[:8],
            reason,
            delay,
        )
        return None
