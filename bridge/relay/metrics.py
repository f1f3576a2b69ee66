"""What a relay counts about itself: `RelayMetrics` and the `RelayStatus` snapshot.

`RelayMetrics` owns one `prometheus_client.CollectorRegistry` per application (never
the process-global one, so several relays in one process keep apart). It holds:

    sealgate_relay_stored_bytes        gauge, read from storage at scrape time
    sealgate_relay_envelopes           gauge, read from storage at scrape time
    sealgate_relay_quota_bytes         gauge, the configured quota (0: none)
    sealgate_relay_deposits_total      counter, envelopes newly stored (201)
    sealgate_relay_fetches_total       counter, envelopes served (200)
    sealgate_relay_purged_total        counter by reason, bumped by `count_purge`
    sealgate_relay_request_seconds     histogram by method and route template
    sealgate_relay_held_listings       gauge, listings held open now (`?wait=`)

Besides the counters it keeps a count per minute of the last 24 hours, for the
status page's rates and purges over time. Labels are route templates and purge
reasons only: nothing here ever holds an id, a body or a peer address, and no
series carries an exact event time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.relay.storage import StorageUsage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PURGE_REASONS = ("quota", "expired")
_MINUTE = 60
_DAY_MINUTES = 24 * 60
_RATE_MINUTES = 15  # rates on the status page are averaged over this many minutes


@dataclass(frozen=True)
class RelayStatus:
    """The figures of the status page and of `sealgate relay status`."""

    uptime_seconds: int
    stored_bytes: int
    quota_bytes: int  # 0: no quota
    envelopes: int
    deposits_total: int
    fetches_total: int
    purged_total: dict[str, int]
    deposits_per_minute: float  # over the last 15 minutes
    fetches_per_minute: float
    purges_by_hour: list[int]  # the last 24 hours, oldest first, current hour last

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> RelayStatus:
        """Parse `to_json`'s form; ValueError if anything is missing or of the wrong type."""
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise ValueError("malformed relay status")
        counts = ("uptime_seconds", "stored_bytes", "quota_bytes", "envelopes",
                  "deposits_total", "fetches_total")
        rates = [data["deposits_per_minute"], data["fetches_per_minute"]]
        purged, by_hour = data["purged_total"], data["purges_by_hour"]
        if not (
            all(_is_count(data[name]) for name in counts)
            and all(_is_count(v) or type(v) is float and v >= 0 for v in rates)
            and isinstance(purged, dict)
            and all(isinstance(k, str) and _is_count(v) for k, v in purged.items())
            and isinstance(by_hour, list) and all(_is_count(v) for v in by_hour)
        ):
            raise ValueError("malformed relay status")
        return cls(
            **{name: data[name] for name in counts}, purged_total=purged,
            deposits_per_minute=float(rates[0]), fetches_per_minute=float(rates[1]),
            purges_by_hour=by_hour,
        )


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


class _UsageCollector(Collector):
    """The storage gauges, read from storage on each scrape (one query, no cache)."""

    def __init__(self, usage: Callable[[], StorageUsage], quota_bytes: int) -> None:
        self._usage = usage
        self._quota = quota_bytes

    def describe(self) -> Iterable[Metric]:
        """The gauges without values, so that registering reads no storage."""
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._usage())

    def _families(self, usage: StorageUsage | None) -> Iterator[Metric]:
        values = (None, None, None) if usage is None else (
            usage.stored_bytes, usage.envelopes, self._quota
        )
        names = (
            ("sealgate_relay_stored_bytes", "Bytes of envelopes stored"),
            ("sealgate_relay_envelopes", "Envelopes stored"),
            ("sealgate_relay_quota_bytes", "Storage quota in bytes (0: none)"),
        )
        for (name, text), value in zip(names, values, strict=True):
            yield GaugeMetricFamily(name, text, value=value)


class _PerMinute:
    """Event counts per minute over the last 24 hours (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.total = 0

    def add(self, amount: int = 1) -> None:
        minute = int(self._clock()) // _MINUTE
        with self._lock:
            self.total += amount
            self._counts[minute] = self._counts.get(minute, 0) + amount
            for old in [m for m in self._counts if m <= minute - _DAY_MINUTES]:
                del self._counts[old]

    def last(self, minutes: int) -> Iterator[int]:
        """The counts of the last `minutes` minutes, oldest first, this minute last."""
        now = int(self._clock()) // _MINUTE
        with self._lock:
            counts = dict(self._counts)
        return (counts.get(minute, 0) for minute in range(now - minutes + 1, now + 1))


class RelayMetrics:
    """The counters of one relay application, and its status snapshot.

    `usage` reads stored bytes and envelopes from storage and may block: call
    `render` and `status` from a worker thread. `count_purge` is for storage or the
    deposit handler to call once per purged envelope.
    """

    def __init__(
        self, usage: Callable[[], StorageUsage], *, quota_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The `_created` series would publish the exact time of the first deposit and
        # fetch; the switch is process-wide, and nothing else here exports metrics.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._usage = usage
        self._quota = quota_bytes
        self._clock = clock
        self._started = clock()
        self.registry.register(_UsageCollector(usage, quota_bytes))
        self._deposits = Counter(
            "sealgate_relay_deposits", "Envelopes newly stored", registry=self.registry
        )
        self._fetches = Counter(
            "sealgate_relay_fetches", "Envelopes served to their mailbox", registry=self.registry
        )
        self._purged = Counter(
            "sealgate_relay_purged", "Envelopes purged before delivery",
            ["reason"], registry=self.registry,
        )
        for reason in PURGE_REASONS:
            self._purged.labels(reason=reason)
        self._latency = Histogram(
            "sealgate_relay_request_seconds", "Time to answer a request",
            ["method", "route"], registry=self.registry,
        )
        self.held_listings = Gauge(
            "sealgate_relay_held_listings", "Mailbox listings held open for new envelopes",
            registry=self.registry,
        )
        self._recent = {name: _PerMinute(clock) for name in ("deposits", "fetches", "purges")}
        self._purged_by_reason = {reason: _PerMinute(clock) for reason in PURGE_REASONS}

    def count_deposit(self) -> None:
        self._deposits.inc()
        self._recent["deposits"].add()

    def count_fetch(self) -> None:
        self._fetches.inc()
        self._recent["fetches"].add()

    def count_purge(self, reason: str, count: int = 1) -> None:
        """`count` envelopes purged for `reason` (one of PURGE_REASONS)."""
        if reason not in PURGE_REASONS:
            raise ValueError(f"unknown purge reason {reason!r}")
        self._purged.labels(reason=reason).inc(count)
        self._purged_by_reason[reason].add(count)
        self._recent["purges"].add(count)

    def observe_request(self, method: str, route: str, seconds: float) -> None:
        """One answered request; `route` is the route template, never a concrete path."""
        self._latency.labels(method=method, route=route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition (reads storage)."""
        return generate_latest(self.registry)

    def status(self) -> RelayStatus:
        """The status snapshot (reads storage)."""
        usage = self._usage()
        by_minute = list(self._recent["purges"].last(_DAY_MINUTES))
        return RelayStatus(
            uptime_seconds=int(self._clock() - self._started),
            stored_bytes=usage.stored_bytes,
            quota_bytes=self._quota,
            envelopes=usage.envelopes,
            deposits_total=self._recent["deposits"].total,
            fetches_total=self._recent["fetches"].total,
            purged_total={reason: c.total for reason, c in self._purged_by_reason.items()},
            deposits_per_minute=sum(self._recent["deposits"].last(_RATE_MINUTES)) / _RATE_MINUTES,
            fetches_per_minute=sum(self._recent["fetches"].last(_RATE_MINUTES)) / _RATE_MINUTES,
            purges_by_hour=[sum(by_minute[h * 60 : (h + 1) * 60]) for h in range(24)],
        )
