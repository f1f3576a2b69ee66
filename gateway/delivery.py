"""The delivery worker: pushes sealed envelopes from the durable outbox to relays.

An outbox entry is removed only after a relay has acknowledged the deposit (201 or
200 for a repeat), so a crash or a dead relay never loses an accepted message; a
deposit repeated after a crash is harmless because relays store envelopes by id.
Relays are tried in the recipient's priority order; when all fail, the entry is
retried later with exponential backoff. A relay that fails (no connection, a timeout,
a 5xx such as 507) is skipped by every deposit until its own backoff has passed
(`RelayHealth`, memory only), so a dead primary costs one timeout, not one per
message; the next deposit after that probes it again. A drained relay (`drained`,
`gateway.drains`) is not deposited to at all. An entry whose relays are full, down or
drained is tried again until one takes it or `give_up` runs out. A pass loads due entries up to
`batch_bytes` of envelopes (at least one), so memory follows the budget, not a count.
The outbox records which relay took each envelope, to be asked about it after
`status_check_interval` seconds (`gateway.undelivered`). An envelope that no relay
took within `give_up` seconds of its submission is given up: it leaves the outbox and
its sender is told in INBOX (`gateway.undelivered` writes the notice). The smarthost
(`gateway.pgp`, its URL known by `is_smarthost`) is a depositor like a relay, except
that it answers no status later: its envelope's sent note is forgotten once it takes
one, and one given up there gets the outcome "smarthost" (its own reason in the notice).

Between passes the worker sleeps until it is woken (a submission, a login) or the
earliest retry it scheduled is due, at most `_IDLE_MAX` seconds: an idle gateway does
not look at an empty outbox every second. Entries come only from this process (woken
when written) or from before its start (the first pass), so nothing due is missed.

A pass deposits its entries in random order, up to `concurrency` requests at once, so
the envelopes of one message (one per recipient, written next to each other) reach the
relays mixed with whatever else is due rather than in a row; a relay that sees only
one message's envelopes in a pass still sees them at about the same time.

Entries whose first usable relay is the same go to it in batches (one request for
many envelopes, `RelayClient.deposit_many`, within the relay's batch limits), in the
shuffled order. What that relay did not take (a refusal of one envelope or of the
whole batch, a failure) goes on to each entry's next relay, grouped in batches again,
with the refusal recorded as if that relay had been tried alone. A relay that has no
batch deposit, or refuses a batch as too large, gets those envelopes one by one; a
lone entry, the smarthost and relays without batches are deposited one by one as
before.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from bridge.envelope_batch import FRAME_OVERHEAD, BatchOutcome
from bridge.errors import BatchUnsupported, RelayError, RelayRejected
from bridge.keys import GatewayCredential
from gateway.store.outbox import Outbox, OutboxEntry
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)
_SHUFFLE = secrets.SystemRandom()
_IDLE_MAX = 60.0  # seconds between passes at most (bounds any wall-clock jump)


class Depositor(Protocol):
    """Where an entry goes: a relay (`RelayClient`), or the smarthost (`gateway.pgp`)."""

    async def deposit(self, envelope: bytes, credential: GatewayCredential) -> None: ...


@runtime_checkable
class BatchDepositor(Depositor, Protocol):
    """A relay that may take many envelopes in one request (`RelayClient`)."""

    takes_batches: bool  # False once the relay answered that it has no batch deposit
    max_batch_envelopes: int
    max_batch_bytes: int

    async def deposit_many(
        self, envelopes: list[bytes], credential: GatewayCredential
    ) -> list[BatchOutcome]: ...


_REFUSALS = {  # what a relay's batch answer means for one envelope not taken
    BatchOutcome.CONFLICT: "409 a different envelope is stored under this id",
    BatchOutcome.MALFORMED: "400 malformed envelope",
    BatchOutcome.STORAGE_FULL: "relay storage is full",
}
Taken = str | None | BaseException  # per entry: the relay that took it, none, or a failure
Tried = Mapping[int, Mapping[str, str]]  # per entry id: relays that refused it this pass, why


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the `attempts`-th failure (1, 2, 3, ...)."""
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))


class RelayHealth:
    """When each relay that failed may be tried again (exponential backoff, memory only)."""

    def __init__(
        self, initial: float, maximum: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._initial, self._maximum, self._clock = initial, maximum, clock
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def ready(self, url: str) -> bool:
        return self._clock() >= self._until.get(url, 0.0)

    def failed(self, url: str) -> float:
        """Count a failure; the seconds `url` now rests."""
        failures = self._failures[url] = self._failures.get(url, 0) + 1
        rest = backoff(failures, self._initial, self._maximum)
        self._until[url] = self._clock() + rest
        return rest

    def succeeded(self, url: str) -> None:
        self._failures.pop(url, None)
        self._until.pop(url, None)

    def wait(self, urls: list[str]) -> float:
        """Seconds until the first of `urls` may be tried again (0 if one may now)."""
        now = self._clock()
        return max(0.0, min((self._until.get(url, 0.0) - now for url in urls), default=0.0))


class DeliveryWorker(PeriodicJob):
    def __init__(
        self,
        outbox: Outbox,
        credential: GatewayCredential,
        client_for: Callable[[str], Depositor],
        *,
        retry_initial: float,
        retry_max: float,
        concurrency: int = 8,
        batch_bytes: int = 64 * 1024 * 1024,
        status_check_interval: float = 3600.0,
        drained: Callable[[str], bool] = lambda url: False,
        give_up: float = 5 * 86400.0,
        is_smarthost: Callable[[str], bool] = lambda url: False,
    ) -> None:
        super().__init__(retry_initial)
        self._is_smarthost = is_smarthost
        self._drained = drained
        self.health = RelayHealth(retry_initial, retry_max)
        self._retries: list[float] = []  # monotonic times of the retries scheduled
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
        again before its backoff, so the passes stop once nothing goes out. When one
        entry's outbox write fails (a full disk), the pass still waits for every other
        deposit and removes what the relays took before it raises: no deposit of a
        failed pass runs on into the next one.
        """
        try:
            due = await asyncio.to_thread(self._outbox.due, datetime.now(UTC), self._batch_bytes)
            _SHUFFLE.shuffle(due)  # the envelopes of one message are not deposited in a row
            groups = self._group(due)
            answers = await asyncio.gather(
                *(self._deliver_group(url, entries) for url, entries in groups),
                return_exceptions=True,
            )
            due = []
            taken: list[Taken] = []
            for (_, entries), answer in zip(groups, answers, strict=True):
                due += entries
                taken += [answer] * len(entries) if isinstance(answer, BaseException) else answer
            del groups, answers
            relays = {
                entry.id: url for entry, url in zip(due, taken, strict=True)
                if isinstance(url, str)
            }
            failed = next((e for e in taken if isinstance(e, BaseException)), None)
            del due, taken
            if relays:
                await asyncio.to_thread(
                    functools.partial(
                        self._outbox.delivered, *relays,
                        relays={i: url for i, url in relays.items() if not self._is_smarthost(url)},
                        check_at=datetime.now(UTC) + self._status_check,
                        forget=[i for i, url in relays.items() if self._is_smarthost(url)],
                    )
                )
            if failed is not None:
                raise failed
        except Exception:
            # A pass that failed (the outbox unwritable: a full disk) is tried again after
            # the shortest backoff, not after the idle wait.
            self._retries.append(time.monotonic() + self._retry_initial)
            raise
        return bool(relays)

    def next_wait(self) -> float:
        now = time.monotonic()
        self._retries = [t for t in self._retries if t > now]
        first = min(self._retries, default=now + _IDLE_MAX)
        return min(_IDLE_MAX, max(first - now, self._retry_initial))

    def _group(
        self, due: list[OutboxEntry], tried: Tried | None = None,
    ) -> list[tuple[str | None, list[OutboxEntry]]]:
        """The entries as batches for the relay each would be deposited on first (one
        it has not `tried` in this pass), in the order of `due`, each within that
        relay's batch limits; (None, [entry]) for one deposited alone (the smarthost, a
        relay without batches, a lone one)."""
        tried = tried or {}
        alone: list[tuple[str | None, list[OutboxEntry]]] = []
        batches: list[tuple[str | None, list[OutboxEntry]]] = []
        filling: dict[str, list[OutboxEntry]] = {}  # per relay, the batch being filled
        sizes: dict[str, int] = {}  # its body's bytes
        for entry in due:
            done = tried.get(entry.id, {})
            url = next((u for u in entry.relays if u not in done
                        and not self._drained(u) and self.health.ready(u)), None)
            client = None if url is None or self._is_smarthost(url) else self._client_for(url)
            size = len(entry.envelope) + FRAME_OVERHEAD
            if url is None or not isinstance(client, BatchDepositor) \
                    or not client.takes_batches or size > client.max_batch_bytes:
                alone.append((None, [entry]))
                continue
            entries = filling.setdefault(url, [])
            if len(entries) == client.max_batch_envelopes \
                    or sizes.get(url, 0) + size > client.max_batch_bytes:
                batches.append((url, entries))
                entries = filling[url] = []
                sizes[url] = 0
            entries.append(entry)
            sizes[url] = sizes.get(url, 0) + size
        batches += filling.items()
        return alone + [(url, entries) if len(entries) > 1 else (None, entries)
                        for url, entries in batches]

    async def _deliver_group(
        self, url: str | None, entries: list[OutboxEntry], tried: Tried | None = None,
    ) -> list[Taken]:
        """Deliver a group of `_group`: per entry, the relay that took it, or None.
        What the relay did not take is grouped again for the entries' next relays."""
        tried = tried or {}
        if url is None:
            return [await self._deliver(entries[0], tried.get(entries[0].id, {}))]
        async with self._slots:
            refusals = await self._deposit_batch(url, entries)
        if refusals is None:  # the relay takes no such batch: one by one
            return list(await asyncio.gather(
                *(self._deliver(entry, tried.get(entry.id, {})) for entry in entries),
                return_exceptions=True,
            ))
        taken: dict[int, Taken] = {}
        left: list[OutboxEntry] = []
        refused = dict(tried)
        for entry, refusal in zip(entries, refusals, strict=True):
            if refusal is None:
                taken[entry.id] = url
            else:
                refused[entry.id] = {**tried.get(entry.id, {}), url: refusal}
                left.append(entry)
        groups = self._group(left, refused)
        answers = await asyncio.gather(
            *(self._deliver_group(next_url, group, refused) for next_url, group in groups),
            return_exceptions=True,
        )
        for (_, group), answer in zip(groups, answers, strict=True):
            for n, entry in enumerate(group):
                taken[entry.id] = answer if isinstance(answer, BaseException) else answer[n]
        return [taken[entry.id] for entry in entries]

    async def _deposit_batch(self, url: str, entries: list[OutboxEntry]) -> list[str | None] | None:
        """Deposit `entries` on `url` in one request. Per entry: None if the relay took
        it, else the relay's refusal; None for all when the relay takes no such batch
        (an older relay, one with lower batch limits)."""
        client = self._client_for(url)
        assert isinstance(client, BatchDepositor)  # noqa: S101 - as `_group` chose
        try:
            outcomes = await client.deposit_many([e.envelope for e in entries], self._credential)
        except BatchUnsupported:
            log.info("delivery: relay %s takes no batches; depositing one by one", url)
            return None
        except RelayRejected as e:  # e.g. 403 once this gateway's credential is revoked
            if e.status == 413:
                return None
            return [f"{url}: {e.status} {e.reason}"] * len(entries)
        except RelayError as e:
            rest = self.health.failed(url)
            log.info("delivery: relay %s failed (%s); set aside for %.0fs", url, e, rest)
            return [f"{url}: {e}"] * len(entries)
        refusals: list[str | None] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if outcome.taken:
                log.debug("delivery: envelope %s deposited", entry.envelope_id.hex()[:8])
                refusals.append(None)
            else:
                refusals.append(f"{url}: {_REFUSALS[outcome]}")
        if BatchOutcome.STORAGE_FULL in outcomes:  # as a 507 to a single deposit
            rest = self.health.failed(url)
            log.info("delivery: relay %s is full; set aside for %.0fs", url, rest)
        else:
            self.health.succeeded(url)
        return refusals

    async def _deliver(self, entry: OutboxEntry, tried: Mapping[str, str]) -> str | None:
        """Deposit on the first relay that takes it; that relay's URL, or None. `tried`:
        the relays that refused it already in this pass, and why."""
        async with self._slots:
            return await self._deposit(entry, tried)

    async def _deposit(self, entry: OutboxEntry, tried: Mapping[str, str]) -> str | None:
        errors = []
        usable = [url for url in entry.relays if not self._drained(url)]
        resting = [url for url in usable if not self.health.ready(url)]
        errors += [f"{url}: drained" for url in entry.relays if url not in usable]
        errors += [f"{url}: failed recently" for url in resting if url not in tried]
        for url in usable:
            if url in tried:
                errors.append(tried[url])
                continue
            if url in resting:
                continue
            try:
                await self._client_for(url).deposit(entry.envelope, self._credential)
            except RelayRejected as e:  # e.g. 403 once this gateway's credential is revoked
                errors.append(f"{url}: {e.status} {e.reason}")
                continue
            except RelayError as e:
                rest = self.health.failed(url)
                log.info("delivery: relay %s failed (%s); set aside for %.0fs", url, e, rest)
                errors.append(f"{url}: {e}")
                continue
            self.health.succeeded(url)
            log.debug("delivery: envelope %s deposited", entry.envelope_id.hex()[:8])
            return url
        attempts = entry.attempts + 1
        reason = "; ".join(errors) or "no relay known"
        now = datetime.now(UTC)
        if now - entry.created_at >= self._give_up:
            outcome = "smarthost" if all(map(self._is_smarthost, entry.relays)) else "refused"
            await asyncio.to_thread(self._outbox.give_up, entry.envelope_id, outcome, now)
            log.warning("delivery: envelope %s given up after %d attempts (%s)",
                        entry.envelope_id.hex()[:8], attempts, reason)
            return None
        delay = backoff(attempts, self._retry_initial, self._retry_max)
        if resting:  # not later than the first resting relay may be tried again
            delay = min(delay, max(self.health.wait(resting), self._retry_initial))
        at = now + timedelta(seconds=delay)
        self._retries.append(time.monotonic() + delay)  # also if the outbox write fails
        await asyncio.to_thread(self._outbox.retry_later, entry.id, at, reason[:500])
        log.info(
            "delivery: envelope %s not deposited (%s); retry in %.0fs",
            entry.envelope_id.hex()[:8],
            reason,
            delay,
        )
        return None
