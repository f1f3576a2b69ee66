"""Group commit for threads: concurrent writers that wait for the same commit share it.

`GroupCommit.commit(item)` returns once `item` is written durably by `write_batch`, or
raises what writing it raised; `commit_all(items)` queues one caller's items at once
and tells what became of each. The first caller to find no commit running writes
everything queued until then in one call (one transaction, one fsync); callers that
arrive meanwhile queue their items and wait, and when that commit ends one of them
writes all of theirs together. At low load an item waits for nobody; at high load
one fsync carries many. If a shared write fails, each item is written again alone,
so one bad item cannot refuse the others (as the gateway's outbox does, see
`gateway.smtp.queueing`). No thread of its own: the writing is done by a caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    def __init__(self, write_batch: Callable[[Sequence[T]], None]) -> None:
        self._write_batch = write_batch
        self._changed = threading.Condition()
        self._queued: list[_Waiter[T]] = []
        self._writing = False

    def commit(self, item: T) -> None:
        waiter = _Waiter(item)
        self._commit([waiter])
        self._raise(waiter)

    def commit_all(self, items: Sequence[T]) -> list[BaseException | None]:
        """Commit `items` together (with whatever else is queued): what writing each
        raised, in order (None: durable)."""
        waiters = [_Waiter(item) for item in items]
        if waiters:
            self._commit(waiters)
        return [waiter.error for waiter in waiters]

    def _commit(self, waiters: list[_Waiter[T]]) -> None:
        with self._changed:
            self._queued += waiters
            # Queued together, taken together: the last one done means all are.
            while self._writing and not waiters[-1].done:
                self._changed.wait()
            if waiters[-1].done:
                return
            batch, self._queued = self._queued, []
            self._writing = True
        try:
            self._write(batch)
        finally:
            with self._changed:
                for other in batch:
                    other.done = True
                self._writing = False
                self._changed.notify_all()

    def _write(self, batch: list[_Waiter[T]]) -> None:
        try:
            self._write_batch([waiter.item for waiter in batch])
        except BaseException as error:  # reported to each waiter (re-raised below)
            if len(batch) == 1 or not isinstance(error, Exception):
                for waiter in batch:
                    waiter.error = error
                return
        else:
            return
        for waiter in batch:  # alone: only the faulty items fail
            try:
                self._write_batch([waiter.item])
            except BaseException as error:  # noqa: BLE001 - that waiter's own failure
                waiter.error = error

    @staticmethod
    def _raise(waiter: _Waiter[T]) -> None:
        if waiter.error is not None:
            raise waiter.error
