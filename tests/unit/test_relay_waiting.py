"""MailboxWaiters: the process-local wakeup of held listings."""

from __future__ import annotations

import asyncio

from bridge.relay.waiting import MailboxWaiters

A, B = b"a" * 32, b"b" * 32


def test_a_deposit_wakes_the_listings_of_its_mailbox_only() -> None:
    async def scenario() -> None:
        waiters = MailboxWaiters()
        with waiters.watch(A) as on_a, waiters.watch(A) as again_a, waiters.watch(B) as on_b:
            assert waiters.waiting == 2
            waiters.notify(A)
            assert await on_a.wait(5) and await again_a.wait(5)
            assert not await on_b.wait(0.01)
        assert waiters.waiting == 0  # nothing kept once no listing waits

    asyncio.run(scenario())


def test_a_deposit_between_registration_and_wait_is_not_missed() -> None:
    async def scenario() -> None:
        waiters = MailboxWaiters()
        with waiters.watch(A) as wakeup:
            waiters.notify(A)  # as if it landed while storage was being read
            assert await wakeup.wait(5)
        with waiters.watch(A) as later:  # a new registration waits for the next one
            assert not await later.wait(0.01)
        waiters.notify(A)  # nobody waits: nothing happens, nothing is kept
        assert waiters.waiting == 0

    asyncio.run(scenario())


def test_closing_answers_every_listing_and_no_new_one_waits() -> None:
    async def scenario() -> None:
        waiters = MailboxWaiters()
        with waiters.watch(A) as held:
            waiters.close()
            assert await held.wait(5)
        with waiters.watch(B) as late:
            assert await late.wait(5)
        assert waiters.closed

    asyncio.run(scenario())
