"""Long-poll listings: wake the listings that wait on a mailbox when it gets a deposit.

`MailboxWaiters` is process-local: a deposit stored by this relay process wakes,
at once, every listing of its mailbox held open by this process. A deposit stored by
another process on the same database does not reach it; a held listing therefore also
looks at storage again every `recheck` seconds (`RelayConfig.wait_recheck`), so a
listing learns of such a deposit within that bound, and of its own process's at once.

A listing registers (`watch`) before it reads storage, so a deposit that lands between
the read and the wait is not missed. This module holds no ids beyond the waits in
progress and does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class _Slot:
    """The listings waiting on one mailbox; the event fires once, then the slot is gone."""

    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0


class Wakeup:
    """One listing's registration: `wait` returns early once its mailbox gets a deposit."""

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    async def wait(self, timeout: float) -> bool:
        """True if a deposit woke it, False after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._slot.event.wait()
        except TimeoutError:
            return False
        return True


class MailboxWaiters:
    def __init__(self) -> None:
        self._slots: dict[bytes, _Slot] = {}
        self.closed = False  # the relay is stopping: held listings answer now

    def close(self) -> None:
        """Wake every held listing; from now on none waits."""
        self.closed = True
        for slot in self._slots.values():
            slot.event.set()
        self._slots.clear()

    @contextlib.contextmanager
    def watch(self, mailbox_id: bytes) -> Iterator[Wakeup]:
        slot = self._slots.get(mailbox_id)
        if self.closed:
            slot = _Slot()
            slot.event.set()
        elif slot is None:
            slot = self._slots[mailbox_id] = _Slot()
        slot.waiters += 1
        try:
            yield Wakeup(slot)
        finally:
            slot.waiters -= 1
            if not slot.waiters and self._slots.get(mailbox_id) is slot:
                del self._slots[mailbox_id]

    def notify(self, mailbox_id: bytes) -> None:
        """Wake every listing that waits on `mailbox_id` now."""
        slot = self._slots.pop(mailbox_id, None)
        if slot is not None:
            slot.event.set()

    @property
    def waiting(self) -> int:
        """Mailboxes with a listing held open (for tests and metrics)."""
        return len(self._slots)
