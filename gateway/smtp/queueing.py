"""Queueing for the outbox: group commit, and large submissions written in bounded parts.

Each DATA handler awaits `OutboxWriter.submit` (or `put`) and answers 250 only after
it returns, so durability is unchanged; but while one commit waits for its fsync,
the writes of every other session pile up and go into the next commit together.
At low load a message waits for nobody; at high load one fsync carries many
messages. If a shared commit fails, each session's writes are retried alone, so
one bad message cannot refuse the others.

A small submission (its size times its recipients within `SEAL_IN_COMMIT_BYTES` and a
quarter of `part_bytes`) is sealed in the thread that commits, just before the commit
that queues it: one thread hop per batch of sessions instead of one more per message,
which matters at 10 KB; sealing it costs well under a millisecond, so the commit is
not held up. If its sealing fails, that session alone is refused.

A larger one is sealed first, in a worker thread of its own, recipient by recipient, and
its envelopes are committed in parts of at most `part_bytes`, so a session holds about
one part of sealed envelopes in memory, not one copy per recipient. The parts share a
hold token: the outbox keeps them out of delivery until the last part commits (see
`gateway.store.outbox`). If queueing fails or the session is cancelled, a `Discard` of
the token goes through the same queue, after everything the session wrote; after a
crash, the gateway discards held envelopes when it starts, and a last part whose earlier
parts are gone is refused. So a message is queued for every recipient or for none, and
the client is told 250 only in the first case. A copy for the sender's own store (its
Sent copy) is prepared with the last part and committed in its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.store.db import StorageFull
from gateway.store.outbox import Discard, Item, Outbox, OutboxWrite, Part, StoredCopy, new_hold

T = TypeVar("T")

__all__ = ["Item", "OutboxWriter", "StoredCopy", "refusal_for"]

SEAL_IN_COMMIT_BYTES = 256 * 1024
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
        self._waiting: list[tuple[_Writes, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def put(self, items: Sequence[Item]) -> None:
        """Return once `items` are committed durably and due; raise what the commit raised."""
        await self._write(Part(new_hold(), items))

    async def submit(
        self, recipients: Sequence[T], seal: Callable[[T], Item],
        copy: Callable[[], StoredCopy] | None = None, *, size: int | None = None,
    ) -> int:
        """Seal (in a worker thread) and queue one envelope per recipient; all or none.

        `copy` prepares a message to store with the last part (in the same thread).
        Returns the number queued once all are durable and due; raises what sealing,
        `copy` or a commit raised, and then none of them will be delivered or stored.
        With the message's `size`, a submission whose envelopes fit well within one
        part is sealed in the committing thread, just before the commit that queues it.
        """
        if size is not None and size * len(recipients) <= min(
            self._part_bytes // 4, SEAL_IN_COMMIT_BYTES
        ):
            sealer = functools.partial(
                _seal_part, recipients, 0, seal, self._part_bytes, copy, b""
            )
            await self._enqueue(lambda: _whole_part(sealer))
            return len(recipients)
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
        await self._enqueue([write])

    async def _enqueue(self, writes: _Writes) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((writes, done))
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

    async def _commit(self, batch: list[tuple[_Writes, asyncio.Future[None]]]) -> None:
        ready, shared_error = await asyncio.to_thread(self._seal_and_write, batch)
        if shared_error is None:
            for writes, done in ready:
                _settle(done, writes if isinstance(writes, Exception) else None)
            return
        sealed: list[tuple[Sequence[OutboxWrite], asyncio.Future[None]]] = []
        for writes, done in ready:
            if isinstance(writes, Exception):
                _settle(done, writes)  # its sealing failed, whatever the commit did
            else:
                sealed.append((writes, done))
        if len(sealed) == 1:
            _settle(sealed[0][1], shared_error)
            return
        for writes, done in sealed:  # retry alone: only the faulty writes fail
            try:
                await asyncio.to_thread(self._outbox.write, writes)
            except Exception as error:  # noqa: BLE001
                _settle(done, error)
            else:
                _settle(done, None)

    def _seal_and_write(
        self, batch: list[tuple[_Writes, asyncio.Future[None]]]
    ) -> tuple[list[tuple[Sequence[OutboxWrite] | Exception, asyncio.Future[None]]],
               Exception | None]:
        """Seal what waits to be sealed, then write the batch in one transaction: each
        session's writes (or what its sealing raised) and what the commit raised."""
        ready: list[tuple[Sequence[OutboxWrite] | Exception, asyncio.Future[None]]] = []
        for writes, done in batch:
            try:
                ready.append((writes() if callable(writes) else writes, done))
            except Exception as error:  # noqa: BLE001 - that session's refusal alone
                ready.append((error, done))
        try:
            self._outbox.write([
                w for writes, _ in ready if not isinstance(writes, Exception) for w in writes
            ])
        except Exception as error:  # noqa: BLE001 - reported to each waiting session
            return ready, error
        return ready, None


_Writes = Sequence[OutboxWrite] | Callable[[], Sequence[OutboxWrite]]


def _whole_part(
    sealer: Callable[[], tuple[list[Item], int, tuple[StoredCopy, ...], bytes]],
) -> list[OutboxWrite]:
    part, _, copies, hold = sealer()
    return [Part(hold, part, True, 0, copies)]


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
