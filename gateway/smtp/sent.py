"""Sent copies with group commit: each submitted message's copy in the sender's Sent folder.

`SentCopies.keep` returns once the copy is committed. While one commit waits for its
fsync, the copies of every other session pile up and go into the next commit together
(one transaction through `MailboxStore.deliver_copies`), as the outbox does
(`gateway.smtp.queueing`), so a copy per message does not cost an fsync per message.
If a shared commit fails, each copy is retried alone, so one account without a Sent
folder cannot lose the others theirs. Copies are sealed under each account's storage key
like all stored mail. Never logs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bridge.keys import AccountKeys
from gateway.store.mailbox import MailboxStore

FOLDER = "Sent"
FLAGS = frozenset({"\\Seen"})

_Copy = tuple[str, AccountKeys, bytes]


class SentCopies:
    def __init__(self, mailboxes: MailboxStore) -> None:
        self._mailboxes = mailboxes
        self._waiting: list[tuple[_Copy, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def keep(self, account: str, keys: AccountKeys, message: bytes) -> None:
        """Store `message` in `account`'s Sent; raise what storing it raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(((account, keys, message), done))
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

    async def _commit(self, batch: list[tuple[_Copy, asyncio.Future[None]]]) -> None:
        try:
            await self._write([copy for copy, _ in batch])
        except Exception as shared:  # noqa: BLE001 - reported to each waiting session
            if len(batch) == 1:
                _settle(batch[0][1], shared)
                return
            for copy, done in batch:
                try:
                    await self._write([copy])
                except Exception as error:  # noqa: BLE001
                    _settle(done, error)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)

    async def _write(self, copies: list[_Copy]) -> None:
        await asyncio.to_thread(
            self._mailboxes.deliver_copies, FOLDER, copies,
            internal_date=datetime.now(UTC), flags=FLAGS,
        )


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the session went away; its copy is kept all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
