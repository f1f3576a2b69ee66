"""The gateway's filing job: pending imports of unlocked accounts into their folders.

For every unlocked account that has pending imports, a pass opens them in memory
(`sealing.open_import`), re-seals each under the account's storage key and, in one
transaction per batch (a count and a byte budget: memory follows the budget),
stores it in its folder (created with its SPECIAL-USE
attribute if missing) with its flags, keywords and internal date and marks the
import filed (`ImportStore.file`). An import that does not open is marked refused
and logged by row id. The job is woken on every unlock, like the fetcher, and looks
for new imports every `interval` seconds, so a migration running beside a serving
gateway with the account logged in is filed as it arrives. It never logs content.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.keys import AccountKeys
from gateway.keyring import KeyRing
from gateway.migrate.sealing import ImportCannotOpen, open_import
from gateway.store.accounts import AccountStore
from gateway.store.folder_rows import PreparedMessage, prepare_message
from gateway.store.imports import ImportStore, PendingImport
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)


class ImportFiler(PeriodicJob):
    def __init__(
        self,
        *,
        accounts: AccountStore,
        keyring: KeyRing,
        imports: ImportStore,
        interval: float,
        batch_messages: int = 100,
        batch_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(interval)
        self._accounts = accounts
        self._keyring = keyring
        self._imports = imports
        self._batch = batch_messages
        self._batch_bytes = batch_bytes

    async def run_once(self) -> bool:
        return await asyncio.to_thread(self.file_all) > 0

    def file_all(self) -> int:
        """One batch per unlocked account with pending imports; the count filed."""
        unlocked: dict[int, AccountKeys] = {}
        for address, keys in self._keyring.unlocked().items():
            account = self._accounts.get(address)
            if account is not None and account.public == keys.public:
                unlocked[account.id] = keys
        filed = 0
        for account_id in self._imports.pending_accounts(unlocked):
            filed += self._file_batch(account_id, unlocked[account_id])
        return filed

    def _file_batch(self, account_id: int, keys: AccountKeys) -> int:
        ready: list[tuple[PendingImport, PreparedMessage]] = []
        refused: list[int] = []
        for item in self._imports.pending(account_id, self._batch, self._batch_bytes):
            try:
                message = open_import(
                    keys, item.sealed, folder=item.folder, flags=item.flags,
                    internal_date=item.internal_date, size=item.size, message_digest=item.digest,
                )
            except ImportCannotOpen:
                log.warning("filing: import %d cannot be opened; refused", item.id)
                refused.append(item.id)
                continue
            ready.append((item, prepare_message(keys.storage_key, account_id, message)))
            del message
        filed = self._imports.file(account_id, ready, refused)
        if filed:
            log.info("filing: %d imported message(s) filed for account %d", filed, account_id)
        return filed
