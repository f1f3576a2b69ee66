from __future__ import annotations

from bridge.directory import DirectoryRecord
from gateway.store.directory_cache import DirectoryCache

pytest_plugins = ["tests.unit.store_fixtures"]


def record(n: int, sealed: bytes = b"sealed") -> DirectoryRecord:
    return DirectoryRecord(lookup_id=bytes([n]) * 32, sealed=sealed + bytes([n]),
                           signature=bytes([n]) * 64)


def test_records_are_kept_replaced_and_survive_reopening(open_store):
    cache = DirectoryCache(open_store())
    cache.put_many([record(1), record(2)])
    cache.put_many([record(2, b"newer"), record(3), record(3, b"last")])
    cache.put_many([])

    reopened = DirectoryCache(open_store())
    assert reopened.get(record(1).lookup_id) == record(1)
    assert reopened.get(record(2).lookup_id) == record(2, b"newer")
    assert reopened.get(record(3).lookup_id) == record(3, b"last")
    assert reopened.get(bytes(32)) is None
