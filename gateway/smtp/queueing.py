"""Group commit for the outbox: concurrent SMTP sessions share one transaction and fsync.

Each DATA handler awaits `OutboxWriter.put(items)` and answers 250 only after it
returns, so durability is unchanged; but while one commit waits for its fsync,
the items of every other session pile up and go into the next commit together.
At low load a message waits for nobody; at high load one fsync carries many
messages. If a shared commit fails, each session's items are retried alone, so
one bad message cannot refuse the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.store.outbox import Outbox

Item = tuple[bytes, bytes, Sequence[str]]  # (envelope id, sealed envelope, relays)


class OutboxWriter:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._waiting: list[tuple[Sequence[Item], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def put(self, items: Sequence[Item]) -> None:
        """Return once `items` are committed durably; raise what the commit raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_waiting())
        await done

    async def _commit_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
        finally:
            self._committer = None

    async def _commit(self, batch: list[tuple[Sequence[Item], asyncio.Future[None]]]) -> None:
        try:
            await asyncio.to_thread(self._outbox.put, [i for items, _ in batch for i in items])
        except Exception as shared_error:  # noqa: BLE001 - reported to each waiting session
            if len(batch) == 1:
                _settle(batch[0][1], shared_error)
                return
            for items, done in batch:  # retry alone: only the faulty items fail
                try:
                    await asyncio.to_thread(self._outbox.put, items)
                except Exception as error:  # noqa: BLE001
                    _settle(done, error)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the session went away; its items are committed all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
