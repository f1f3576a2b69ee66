"""Group commit and bounded parts of the SMTP outbox on a real SQLite store."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.smtp.queueing import OutboxWriter
from gateway.store.db import DuplicateEnvelope, open_engine
from gateway.store.outbox import Outbox

ALL = 2**40
BIG = 64 * 1024 * 1024


class CountingOutbox(Outbox):
    """The real outbox, counting its transactions."""

    commits = 0

    def write(self, writes):  # type: ignore[no-untyped-def]
        type(self).commits += 1
        super().write(writes)


def item() -> tuple[bytes, bytes, tuple[str, ...]]:
    return secrets.token_bytes(16), secrets.token_bytes(64), ("http://127.0.0.1:1",)


def test_concurrent_sessions_share_commits_and_all_are_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gateway.db"
    outbox = CountingOutbox(open_engine(url))
    CountingOutbox.commits = 0
    writer = OutboxWriter(outbox, part_bytes=BIG)
    messages = [[item(), item()] for _ in range(60)]

    async def submit_all() -> None:
        await asyncio.gather(*(writer.put(m) for m in messages))

    asyncio.run(submit_all())
    assert 1 <= CountingOutbox.commits < len(messages)  # fewer fsyncs than messages
    reopened = Outbox(open_engine(url))
    assert reopened.pending_count() == 120


def test_a_faulty_message_does_not_refuse_the_others(tmp_path: Path) -> None:
    outbox = Outbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    queued = item()
    outbox.put([queued])
    writer = OutboxWriter(outbox, part_bytes=BIG)
    good = [[item()] for _ in range(5)]

    async def submit() -> list[BaseException | None]:
        return await asyncio.gather(
            *(writer.put(m) for m in good[:3]), writer.put([queued]),
            *(writer.put(m) for m in good[3:]), return_exceptions=True,
        )

    results = asyncio.run(submit())
    assert isinstance(results[3], DuplicateEnvelope)
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 5
    assert outbox.pending_count() == 6


def test_a_lone_failure_is_raised_to_its_session(tmp_path: Path) -> None:
    outbox = Outbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    queued = item()
    outbox.put([queued])
    with pytest.raises(DuplicateEnvelope):
        asyncio.run(OutboxWriter(outbox, part_bytes=BIG).put([queued]))


def sealed(size: int):  # type: ignore[no-untyped-def]
    """A stand-in for sealing: an envelope of `size` bytes for any recipient."""

    def seal(recipient: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        return secrets.token_bytes(16), bytes([recipient % 256]) * size, ("http://127.0.0.1:1",)

    return seal


def test_a_large_submission_is_committed_in_parts_within_the_budget(tmp_path: Path) -> None:
    outbox = CountingOutbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    CountingOutbox.commits = 0
    writer = OutboxWriter(outbox, part_bytes=3000)
    held_while_queueing: list[int] = []

    def seal(recipient: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        held_while_queueing.append(len(outbox.due(datetime.now(UTC) + timedelta(seconds=1), ALL)))
        return sealed(1000)(recipient)

    assert asyncio.run(writer.submit(range(10), seal)) == 10
    assert CountingOutbox.commits == 4  # parts of 3, 3, 3 and 1 envelopes
    assert held_while_queueing == [0] * 10  # no envelope was due before the last part
    assert len(outbox.due(datetime.now(UTC) + timedelta(seconds=1), ALL)) == 10


def test_an_envelope_larger_than_the_budget_is_a_part_alone(tmp_path: Path) -> None:
    outbox = CountingOutbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    CountingOutbox.commits = 0
    writer = OutboxWriter(outbox, part_bytes=100)
    assert asyncio.run(writer.submit(range(3), sealed(1000))) == 3
    assert CountingOutbox.commits == 3
    assert outbox.pending_count() == 3


def test_a_failure_between_parts_queues_nothing(tmp_path: Path) -> None:
    outbox = Outbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    writer = OutboxWriter(outbox, part_bytes=2000)

    def seal(recipient: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        if recipient == 7:
            raise MemoryError  # sealing or the disk fails after three parts were committed
        return sealed(1000)(recipient)

    with pytest.raises(MemoryError):
        asyncio.run(writer.submit(range(10), seal))
    assert outbox.pending_count() == 0
    assert outbox.due(datetime.now(UTC) + timedelta(seconds=1), ALL) == []


def test_a_session_cancelled_between_parts_queues_nothing(tmp_path: Path) -> None:
    outbox = Outbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    writer = OutboxWriter(outbox, part_bytes=2000)

    async def cancel_midway() -> None:
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def seal(recipient: int) -> tuple[bytes, bytes, tuple[str, ...]]:
            if recipient == 5:
                loop.call_soon_threadsafe(started.set)
            return sealed(1000)(recipient)

        task = asyncio.create_task(writer.submit(range(100), seal))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert outbox.pending_count() == 0



def test_small_submissions_are_sealed_with_their_shared_commit(tmp_path: Path) -> None:
    outbox = CountingOutbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
    CountingOutbox.commits = 0
    writer = OutboxWriter(outbox, part_bytes=BIG)

    def seal(recipient: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        if recipient == 13:
            raise ValueError("cannot seal")  # this session alone is refused
        return sealed(1000)(recipient)

    async def submit_all() -> list[int | BaseException]:
        return await asyncio.gather(
            *(writer.submit([n, n + 100], seal, size=1000) for n in range(20)),
            return_exceptions=True,
        )

    results = asyncio.run(submit_all())
    assert isinstance(results[13], ValueError)
    assert [r for n, r in enumerate(results) if n != 13] == [2] * 19
    assert 1 <= CountingOutbox.commits < 19  # sealed and committed in shared batches
    assert len(outbox.due(datetime.now(UTC) + timedelta(seconds=1), ALL)) == 38
