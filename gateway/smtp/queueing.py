"""Queueing for the outbox: group commit, and large submissions written in bounded parts.

Each DATA handler awaits `OutboxWriter.submit` (or `put`) and answers 250 only after
it returns, so durability is unchanged; but while one commit waits for its fsync,
the writes of every other session pile up and go into the next commit together.
At low load a message waits for nobody; at high load one fsync carries many
messages. If a shared commit fails, each session's writes are retried alone, so
one bad message cannot refuse the others.

`submit` seals a message recipient by recipient and commits the envelopes in parts
of at most `part_bytes`, so a session holds about one part of sealed envelopes in
memory, not one copy per recipient. The parts share a hold token: the outbox keeps
them out of delivery until the last part commits (see `gateway.store.outbox`). If
queueing fails or the session is cancelled, a `Discard` of the token goes through
the same queue, after everything the session wrote; after a crash, the gateway
discards held envelopes when it starts, and a last part whose earlier parts are
gone is refused. So a message is queued for every recipient or for none, and the
client is told 250 only in the first case. A copy for the sender's own store (its
Sent copy) is prepared with the last part and committed in its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.store.db import StorageFull
from gateway.store.outbox import Discard, Item, Outbox, OutboxWrite, Part, StoredCopy, new_hold

T = TypeVar("T")

__all__ = ["Item", "OutboxWriter", "StoredCopy", "refusal_for"]

STORAGE_FULL = "452 4.3.1 Not enough storage on this gateway now; please try again later"
CANNOT_QUEUE = "451 4.3.0 Cannot queue the message now; try again later"


def refusal_for(error: Exception) -> str:
    """The reply to a DATA whose queueing raised `error`: both temporary, so the client
    keeps the message and tries again (RFC 3463: 4.3.1 is "mail system full")."""
    return STORAGE_FULL if isinstance(error, StorageFull) else CANNOT_QUEUE


class OutboxWriter:
    def __init__(self, outbox: Outbox, *, part_bytes: int) -> None:
        self._outbox = outbox
        self._part_bytes = part_bytes
        self._waiting: list[tuple[Sequence[OutboxWrite], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def put(self, items: Sequence[Item]) -> None:
        """Return once `items` are committed durably and due; raise what the commit raised."""
        await self._write(Part(new_hold(), items))

    async def submit(
        self, recipients: Sequence[T], seal: Callable[[T], Item],
        copy: Callable[[], StoredCopy] | None = None,
    ) -> int:
        """Seal (in a worker thread) and queue one envelope per recipient; all or none.

        `copy` prepares a message to store with the last part (in the same thread).
        Returns the number queued once all are durable and due; raises what sealing,
        `copy` or a commit raised, and then none of them will be delivered or stored.
        """
        hold = b""  # made in the sealing thread: random bytes cost the loop a GIL handoff
        done = 0
        try:
            while done < len(recipients):
                earlier = done
                part, done, copies, hold = await asyncio.to_thread(
                    _seal_part, recipients, done, seal, self._part_bytes, copy, hold
                )
                last = done == len(recipients)
                await self._write(Part(hold, part, last, earlier, copies))
                del part, copies  # before sealing the next part: one part held at a time
        except BaseException:
            if hold:
                with contextlib.suppress(Exception):  # what stays held: discarded at start-up
                    await self._write(Discard(hold))
            raise
        return done

    async def _write(self, write: OutboxWrite) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(([write], done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_waiting())
        await done

    async def _commit_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
                del batch
        finally:
            self._committer = None

    async def _commit(
        self, batch: list[tuple[Sequence[OutboxWrite], asyncio.Future[None]]]
    ) -> None:
        try:
            await asyncio.to_thread(self._outbox.write, [w for writes, _ in batch for w in writes])
        except Exception as shared_error:  # noqa: BLE001 - reported to each waiting session
            if len(batch) == 1:
                _settle(batch[0][1], shared_error)
                return
            for writes, done in batch:  # retry alone: only the faulty writes fail
                try:
                    await asyncio.to_thread(self._outbox.write, writes)
                except Exception as error:  # noqa: BLE001
                    _settle(done, error)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _seal_part(
    recipients: Sequence[T], start: int, seal: Callable[[T], Item], budget: int,
    copy: Callable[[], StoredCopy] | None, hold: bytes,
) -> tuple[list[Item], int, tuple[StoredCopy, ...], bytes]:
    """Seal from `recipients[start]` on, while another envelope of the same size fits.

    The envelopes of one message are the same size (one padding bucket), so the part
    stays within `budget`, or is a single envelope when one alone exceeds it.
    Returns the part, the index of the next recipient, with the last part the prepared
    `copy`, and the submission's `hold` (a new one for its first part).
    """
    hold = hold or new_hold()
    part: list[Item] = []
    size = 0
    for position in range(start, len(recipients)):
        item = seal(recipients[position])
        part.append(item)
        size += len(item[1])
        if size + len(item[1]) > budget and position + 1 < len(recipients):
            return part, position + 1, (), hold
    return part, len(recipients), () if copy is None else (copy(),), hold


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the session went away; its writes are committed all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
