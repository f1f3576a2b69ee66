"""GroupCommit: writers that wait for the same commit share it; a bad item fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from bridge.relay.storage.group_commit import GroupCommit


class Log:
    """A `write_batch` that records its batches; the first one waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.writing = threading.Event()
        self.release = threading.Event()

    def write(self, items: Sequence[str]) -> None:
        if not self.batches:
            self.writing.set()
            self.release.wait(10)
        if "bad" in items:
            raise ValueError("bad item")
        self.batches.append(list(items))


def queued(group: GroupCommit[str], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._queued) < count:  # noqa: SLF001 - the test waits for the queue to fill
        assert time.monotonic() < deadline
        time.sleep(0.001)


def commit_behind_a_first(log: Log, items: list[str]) -> list[Future[None]]:
    """Commit "first", then `items` while its write is held; their futures, first first."""
    group = GroupCommit(log.write)
    pool = ThreadPoolExecutor(len(items) + 1)
    first = pool.submit(group.commit, "first")
    assert log.writing.wait(10)
    rest = [pool.submit(group.commit, item) for item in items]
    queued(group, len(items))
    log.release.set()
    pool.shutdown(wait=True)
    return [first, *rest]


def test_writers_waiting_for_a_commit_share_the_next_one() -> None:
    log = Log()
    for future in commit_behind_a_first(log, [f"item {n}" for n in range(5)]):
        future.result(10)
    assert log.batches[0] == ["first"]
    assert sorted(log.batches[1]) == [f"item {n}" for n in range(5)]
    assert len(log.batches) == 2


def test_a_failing_item_fails_alone() -> None:
    log = Log()
    first, one, two, bad = commit_behind_a_first(log, ["one", "two", "bad"])
    for future in (first, one, two):
        future.result(10)
    with pytest.raises(ValueError, match="bad item"):
        bad.result(10)
    written = [item for batch in log.batches for item in batch]
    assert sorted(written) == ["first", "one", "two"]


def test_one_callers_items_share_a_commit_and_a_bad_one_fails_alone() -> None:
    log = Log()
    log.release.set()
    group = GroupCommit(log.write)
    errors = group.commit_all(["one", "bad", "two"])
    assert [type(error) for error in errors] == [type(None), ValueError, type(None)]
    assert [item for batch in log.batches for item in batch] == ["one", "two"]
    assert group.commit_all([]) == []


def test_a_callers_items_wait_behind_a_running_commit_and_go_together() -> None:
    log = Log()
    group = GroupCommit(log.write)
    pool = ThreadPoolExecutor(3)
    first = pool.submit(group.commit, "first")
    assert log.writing.wait(10)
    many = pool.submit(group.commit_all, ["a", "b", "c"])
    other = pool.submit(group.commit, "other")
    queued(group, 4)
    log.release.set()
    pool.shutdown(wait=True)
    first.result(10)
    other.result(10)
    assert many.result(10) == [None, None, None]
    assert log.batches[0] == ["first"]
    assert sorted(log.batches[1]) == ["a", "b", "c", "other"]
