"""RelayMetrics' counts over time, the status snapshot, and how the page and the CLI show it."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.relay.metrics import RelayMetrics, RelayStatus
from bridge.relay.operator import format_bytes, format_duration, render_status_page, status_table
from bridge.relay.storage import StorageUsage

T0 = 1_800_000_000.0  # on a minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_metrics(
    quota: int = 0, usage: StorageUsage | None = None
) -> tuple[RelayMetrics, Clock]:
    clock = Clock()
    held = usage or StorageUsage(3, 300)
    return RelayMetrics(lambda: held, quota_bytes=quota, clock=clock), clock


def test_rates_cover_the_last_15_minutes_and_totals_stay() -> None:
    metrics, clock = make_metrics()
    for _ in range(15):
        metrics.count_deposit()
    clock.now += 5 * 60
    for _ in range(3):
        metrics.count_fetch()
    status = metrics.status()
    assert (status.deposits_per_minute, status.fetches_per_minute) == (1.0, 0.2)
    clock.now += 11 * 60  # the deposits are 16 minutes old, the fetches 11
    status = metrics.status()
    assert (status.deposits_per_minute, status.fetches_per_minute) == (0.0, 0.2)
    assert (status.deposits_total, status.fetches_total) == (15, 3)
    assert status.uptime_seconds == 16 * 60


def test_purges_by_hour_roll_over_a_day() -> None:
    metrics, clock = make_metrics()
    metrics.count_purge("quota")
    clock.now += 2 * 3600
    metrics.count_purge("expired", 2)
    status = metrics.status()
    assert status.purges_by_hour[-1] == 2 and status.purges_by_hour[-3] == 1
    assert sum(status.purges_by_hour) == 3 and len(status.purges_by_hour) == 24
    assert status.purged_total == {"quota": 1, "expired": 2}
    clock.now += 23 * 3600  # the first is 25 hours old, the others 23
    assert metrics.status().purges_by_hour == [2] + [0] * 23
    clock.now += 3600
    status = metrics.status()
    assert status.purges_by_hour == [0] * 24
    assert status.purged_total == {"quota": 1, "expired": 2}


def test_storage_gauges_are_read_at_each_scrape() -> None:
    usage = [StorageUsage(1, 100)]
    metrics = RelayMetrics(lambda: usage[-1], quota_bytes=5000)

    def gauges() -> dict[str, float]:
        text = metrics.render().decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name in {"sealgate_relay_stored_bytes", "sealgate_relay_envelopes",
                               "sealgate_relay_quota_bytes"}
        }

    assert gauges() == {"sealgate_relay_stored_bytes": 100, "sealgate_relay_envelopes": 1,
                        "sealgate_relay_quota_bytes": 5000}
    usage.append(StorageUsage(4, 4000))
    assert gauges()["sealgate_relay_stored_bytes"] == 4000


def test_page_shows_storage_against_the_quota() -> None:
    metrics, _ = make_metrics(quota=1000, usage=StorageUsage(2, 300))
    html = render_status_page(metrics.status())
    assert re.search(r'id="quota-bytes" data-value="1000">1000 B<', html)
    assert "30.0% of the quota used." in html
    assert 'style="width: 30.0%"' in html
    table = status_table(metrics.status())
    assert re.search(r"^quota\s+1000 B \(1000 bytes\)$", table, re.M)


def test_page_escapes_what_it_shows() -> None:
    metrics, _ = make_metrics()
    status = metrics.status()
    hostile = RelayStatus(**(status.to_json() | {"purged_total": {"<b>x</b>": 1}}))
    html = render_status_page(hostile)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_status_json_round_trip_and_refusals() -> None:
    metrics, _ = make_metrics()
    metrics.count_purge("quota")
    status = metrics.status()
    assert RelayStatus.from_json(status.to_json()) == status
    good = status.to_json()
    for bad in (
        None, [], {}, good | {"extra": 1}, good | {"envelopes": -1}, good | {"envelopes": True},
        good | {"stored_bytes": "300"}, good | {"deposits_per_minute": "fast"},
        good | {"purged_total": {"quota": -2}}, good | {"purges_by_hour": [1.5]},
    ):
        with pytest.raises(ValueError, match="malformed relay status"):
            RelayStatus.from_json(bad)


def test_unknown_purge_reason_is_refused() -> None:
    metrics, _ = make_metrics()
    with pytest.raises(ValueError, match="unknown purge reason"):
        metrics.count_purge("because")


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * 1024, "1.5 MiB"),
    (20 * 1024**3, "20.0 GiB"), (3 * 1024**5, "3072.0 TiB"),
])
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (3600, "1h 0s"), (90061, "1d 1h 1m 1s"),
])
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
