"""The gateway's directory replica keeps, per lookup id, the highest version it was given."""

from __future__ import annotations

from bridge.directory import DirectoryRecord
from gateway.store.directory_cache import DirectoryCache

pytest_plugins = ["tests.unit.store_fixtures"]


def record(n: int, sealed: bytes = b"sealed", version: int = 1) -> DirectoryRecord:
    return DirectoryRecord(lookup_id=bytes([n]) * 32, version=version,
                           sealed=sealed + bytes([n]), signature=bytes([n]) * 64)


def test_records_are_kept_replaced_and_survive_reopening(open_store):
    cache = DirectoryCache(open_store())
    assert cache.put_many([record(1), record(2)]) == 2
    assert cache.put_many([record(2, b"newer", 2), record(3), record(3, b"last", 2)]) == 2
    assert cache.put_many([]) == 0

    reopened = DirectoryCache(open_store())
    assert reopened.get(record(1).lookup_id) == record(1)
    assert reopened.get(record(2).lookup_id) == record(2, b"newer", 2)
    assert reopened.get(record(3).lookup_id) == record(3, b"last", 2)
    assert reopened.get(bytes(32)) is None


def test_an_older_or_equal_version_never_replaces_a_newer_one(open_store):
    cache = DirectoryCache(open_store())
    cache.put_many([record(1, b"current", 5)])
    assert cache.put_many([record(1, b"replayed", 4), record(1, b"same version", 5)]) == 0
    assert cache.get(record(1).lookup_id) == record(1, b"current", 5)
    # Within one batch the highest version wins, whatever the order.
    assert cache.put_many([record(1, b"seven", 7), record(1, b"six", 6)]) == 1
    assert cache.get(record(1).lookup_id) == record(1, b"seven", 7)
