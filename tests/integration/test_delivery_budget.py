"""The delivery worker's passes: work loaded by a byte budget and all of it delivered,
in shuffled order, and a pass whose outbox write fails part way.

Real SQLite outbox, real relay on 127.0.0.1 (in process); the outbox is the real one,
counting the envelope bytes each pass loads, or failing one write.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from bridge.envelope import MIN_BUCKET, OuterHeader
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from gateway.delivery import DeliveryWorker
from gateway.store.db import open_engine
from gateway.store.outbox import Outbox, OutboxEntry
from tests.bubble_processes import free_port
from tests.relay_servers import relays

pytestmark = pytest.mark.integration


class MeasuredOutbox(Outbox):
    """The real outbox, remembering how many envelope bytes each `due` returned."""

    loads: list[int]

    def due(self, now: datetime, max_bytes: int) -> list[OutboxEntry]:
        entries = super().due(now, max_bytes)
        self.loads.append(sum(len(entry.envelope) for entry in entries))
        return entries


def envelope(mailbox_id: bytes, ciphertext_len: int) -> tuple[bytes, bytes]:
    envelope_id = os.urandom(16)
    header = OuterHeader(envelope_id, mailbox_id, ciphertext_len)
    return envelope_id, header.pack() + os.urandom(ciphertext_len)


def test_each_pass_stays_within_the_budget_and_everything_is_deposited(tmp_path: Path) -> None:
    root = RootKey.generate()
    bob = AccountKeys.generate()

    async def scenario() -> None:
        async with relays(tmp_path, root) as ([server], clients):
            outbox = MeasuredOutbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
            outbox.loads = []
            small = [envelope(bob.public.mailbox_id, MIN_BUCKET) for _ in range(7)]
            large = envelope(bob.public.mailbox_id, 4 * MIN_BUCKET)
            outbox.put([(i, e, (server.url,)) for i, e in [*small[:3], large, *small[3:]]])
            budget = 2 * len(small[0][1])
            worker = DeliveryWorker(
                outbox, GatewayCredential.issue(root), clients.__getitem__,
                retry_initial=60, retry_max=60, batch_bytes=budget,
            )
            while await worker.run_once():
                pass
            assert outbox.pending_count() == 0
            stored = {info.envelope_id for info in await clients[server.url].list(bob.mailbox)}
            assert stored == {i for i, _ in [*small, large]}
            one, big = len(small[0][1]), len(large[1])
            # in schedule order: two small, one (the large one would overflow), the large
            # one alone (it exceeds the budget by itself), two, two, then nothing is due
            assert outbox.loads == [2 * one, one, big, 2 * one, 2 * one, 0]

    asyncio.run(scenario())


def test_the_envelopes_of_one_message_are_not_deposited_in_a_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four messages to five recipients each, written message by message: one pass
    deposits them (one at a time, so the log shows the relay's order) shuffled."""
    root = RootKey.generate()
    recipients = [AccountKeys.generate() for _ in range(5)]

    async def scenario() -> None:
        async with relays(tmp_path, root) as ([server], clients):
            outbox = Outbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
            messages = [[envelope(r.public.mailbox_id, MIN_BUCKET) for r in recipients]
                        for _ in range(4)]
            outbox.put([(i, e, (server.url,)) for message in messages for i, e in message])
            worker = DeliveryWorker(
                outbox, GatewayCredential.issue(root), clients.__getitem__,
                retry_initial=60, retry_max=60, concurrency=1,
            )
            with caplog.at_level(logging.DEBUG, logger="gateway.delivery"):
                await worker.run_once()
            assert outbox.pending_count() == 0
            order = re.findall(r"envelope ([0-9a-f]{8}) deposited", caplog.text)
            message_of = {i.hex()[:8]: n for n, message in enumerate(messages)
                          for i, _ in message}
            assert sorted(order) == sorted(message_of)
            runs = [message_of[prefix] for prefix in order]
            # In outbox order each message's five would be a run; shuffled, keeping all
            # four runs whole has a chance of about 1 in 10^9.
            assert any(runs[k:k + 5] != [runs[k]] * 5 for k in range(0, 20, 5))

    asyncio.run(scenario())


class FullOutbox(Outbox):
    """The real outbox, except that scheduling a retry fails as on a full disk (a fault
    injected at the storage layer: tests/integration/test_disk_full.py fills a real one)."""

    def retry_later(self, entry_id: int, at: datetime, error: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_pass_whose_retry_write_fails_still_removes_what_the_relay_took(
    tmp_path: Path,
) -> None:
    root = RootKey.generate()
    bob = AccountKeys.generate()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: that deposit fails at once

    async def scenario() -> None:
        async with relays(tmp_path, root, dead=[dead]) as ([server], clients):
            outbox = FullOutbox(open_engine(f"sqlite:///{tmp_path}/gateway.db"))
            good = [envelope(bob.public.mailbox_id, MIN_BUCKET) for _ in range(6)]
            lost = envelope(bob.public.mailbox_id, MIN_BUCKET)
            outbox.put([*((i, e, (server.url,)) for i, e in good), (*lost, (dead,))])
            worker = DeliveryWorker(
                outbox, GatewayCredential.issue(root), clients.__getitem__,
                retry_initial=60, retry_max=60,
            )
            with pytest.raises(OSError, match="No space left"):
                await worker.run_once()
            # The deposits that went through are out of the outbox, the failed one is
            # kept, and none of the pass's deposits is still running.
            assert outbox.pending_count() == 1
            stored = {info.envelope_id for info in await clients[server.url].list(bob.mailbox)}
            assert stored == {i for i, _ in good}
            running = [task for task in asyncio.all_tasks()
                       if task.get_coro().__qualname__ == "DeliveryWorker._deliver"]
            assert running == []

    asyncio.run(scenario())
