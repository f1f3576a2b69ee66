"""Group commit of the SMTP outbox on a real SQLite store."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from gateway.smtp.queueing import OutboxWriter
from gateway.store.db import DuplicateEnvelope, open_engine
from gateway.store.outbox import Outbox


class CountingOutbox(Outbox):
    """The real outbox, counting its transactions."""

    commits = 0

    def put(self, items):  # type: ignore[no-untyped-def]
        type(self).commits += 1
        super().put(items)


def item() -> tuple[bytes, bytes, tuple[str, ...]]:
    return secrets.token_bytes(16), secrets.token_bytes(64), ("http://127.0.0.1:1",)


def test_concurrent_sessions_share_commits_and_all_are_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gateway.db"
    outbox = CountingOutbox(open_engine(url))
    CountingOutbox.commits = 0
    writer = OutboxWriter(outbox)
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
    writer = OutboxWriter(outbox)
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
        asyncio.run(OutboxWriter(outbox).put([queued]))
