"""Sent copies: each submitted message's copy for the sender's Sent folder.

`SentCopies.prepare` seals the copy under the account's storage key (as all stored
mail) in the thread that seals the message's envelopes; the outbox stores it in the
transaction that queues them (`gateway.smtp.queueing`), so the copy costs no commit
and no fsync of its own and exists exactly when the message was accepted. A Sent
folder the user deleted is created again. Never logs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.keys import AccountKeys
from gateway.store.accounts import AccountStore
from gateway.store.db import KeyMismatch, UnknownAccount
from gateway.store.folder_rows import prepare_message
from gateway.store.outbox import StoredCopy

FOLDER = "Sent"
SPECIAL_USE = "\\Sent"
FLAGS = frozenset({"\\Seen"})


class SentCopies:
    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts
        self._ids: dict[str, int] = {}  # account address -> its row id

    def prepare(self, account: str, keys: AccountKeys, message: bytes) -> StoredCopy:
        """`message` sealed for `account`'s Sent folder; raises `UnknownAccount`, or
        `KeyMismatch` when `keys` are not the account's."""
        account_id = self._ids.get(account)
        if account_id is None:
            row = self._accounts.get(account)
            if row is None:
                raise UnknownAccount()
            if row.public.mailbox_key != keys.public.mailbox_key:
                raise KeyMismatch()
            account_id = self._ids[account] = row.id
        return StoredCopy(
            account_id=account_id, folder=FOLDER, special_use=SPECIAL_USE,
            prepared=prepare_message(keys.storage_key, account_id, message),
            flags=FLAGS, internal_date=datetime.now(UTC), storage_key=keys.storage_key,
        )
