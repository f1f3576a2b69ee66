"""An in-memory mail store implementing the Protocols of `gateway.imap.backend`.

A real backend, like pymap's `backend/dict`: folders with UIDVALIDITY, UIDNEXT and modseqs,
flags, expunge, sessions that close. It keeps the SQL store's contract where the IMAP layer
can see it (addresses normalized as `gateway.store.accounts` does; one new modseq per
flag change, shared by the messages it changed; an expunge log for `changes_since`;
a `ChangeNotifier` signalled after every change), so the same tests run on both
(tests/imap_backends.py). Thread-safe, because integration tests deliver mail from the
test thread while the server's loop runs in another. It keeps mail in memory only; it
is for tests and never touches a disk.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gateway.imap.backend import (
    AuthenticationFailed,
    ChangeNotifier,
    FlagMode,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    MailboxNotFound,
    MessageMeta,
    StoredHeader,
    StoredMessage,
    header_block,
)
from gateway.store.accounts import normalize_address

DEFAULT_FOLDERS = (
    FolderInfo("INBOX"),
    FolderInfo("Sent", ("\\Sent",)),
    FolderInfo("Drafts", ("\\Drafts",)),
    FolderInfo("Trash", ("\\Trash",)),
)


@dataclass
class _Folder:
    info: FolderInfo
    uid_validity: int
    uid_next: int = 1
    highest_modseq: int = 1
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq of its expunge

    def changes_since(self, modseq: int) -> FolderChanges:
        return FolderChanges(
            uid_validity=self.uid_validity,
            uid_next=self.uid_next,
            highest_modseq=self.highest_modseq,
            changed=tuple(
                self.messages[uid].meta
                for uid in sorted(self.messages)
                if self.messages[uid].meta.modseq > modseq
            ),
            expunged=tuple(uid for uid, seq in sorted(self.expunged.items()) if seq > modseq),
        )

    def snapshot(self) -> FolderSnapshot:
        return FolderSnapshot(
            name=self.info.name,
            uid_validity=self.uid_validity,
            uid_next=self.uid_next,
            highest_modseq=self.highest_modseq,
            messages=tuple(self.messages[uid].meta for uid in sorted(self.messages)),
        )


@dataclass
class _Account:
    address: str
    password: str
    folders: dict[str, _Folder]


class MemoryStore:
    """Accounts and their folders. `deliver` adds mail as the fetcher would."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, _Account] = {}
        self.notifier = ChangeNotifier()
        self._validity = 1000

    def changed(self, address: str, folder: str) -> None:
        """Signal waiting sessions (call with the lock released or held: it only wakes)."""
        f = self.folder(address, folder)
        self.notifier.changed((normalize_address(address), f.info.name), f.highest_modseq)

    def add_account(
        self, address: str, password: str, folders: Iterable[FolderInfo] = DEFAULT_FOLDERS
    ) -> None:
        with self.lock:
            made = {}
            for info in folders:
                self._validity += 1
                made[info.name] = _Folder(info, self._validity)
            address = normalize_address(address)
            self.accounts[address] = _Account(address, password, made)

    def folder(self, address: str, name: str) -> _Folder:
        with self.lock:
            try:
                return self.accounts[normalize_address(address)].folders[name]
            except KeyError:
                raise MailboxNotFound(name) from None

    def deliver(
        self,
        address: str,
        folder: str,
        body: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> int:
        with self.lock:
            f = self.folder(address, folder)
            uid = f.uid_next
            f.uid_next += 1
            f.highest_modseq += 1
            meta = MessageMeta(
                uid=uid,
                flags=frozenset(flags),
                internal_date=internal_date or datetime.now(UTC),
                size=len(body),
                modseq=f.highest_modseq,
            )
            f.messages[uid] = StoredMessage(meta, body)
            self.changed(address, folder)
            return uid

    def remove_folder(self, address: str, name: str) -> None:
        with self.lock:
            del self.accounts[normalize_address(address)].folders[name]


class MemorySession:
    """One logged-in account (implements `MailSession`)."""

    def __init__(self, store: MemoryStore, address: str) -> None:
        self._store = store
        self._address = address
        self.closed = False

    @property
    def address(self) -> str:
        return self._address

    def _folder(self, name: str) -> _Folder:
        if self.closed:
            raise RuntimeError("session used after close")
        return self._store.folder(self._address, name)

    def list_folders(self) -> Sequence[FolderInfo]:
        with self._store.lock:
            if self.closed:
                raise RuntimeError("session used after close")
            return [f.info for f in self._store.accounts[self._address].folders.values()]

    def snapshot(self, folder: str) -> FolderSnapshot:
        with self._store.lock:
            return self._folder(folder).snapshot()

    def changes_since(self, folder: str, modseq: int) -> FolderChanges:
        with self._store.lock:
            return self._folder(folder).changes_since(modseq)

    async def wait_for_change(self, folder: str, modseq: int, timeout: float) -> bool:
        key = (self._address, self._folder(folder).info.name)
        return await self._store.notifier.wait(key, modseq, timeout)

    def fetch(self, folder: str, uids: Sequence[int]) -> Sequence[StoredMessage]:
        with self._store.lock:
            f = self._folder(folder)
            return [f.messages[uid] for uid in sorted(set(uids)) if uid in f.messages]

    def fetch_headers(self, folder: str, uids: Sequence[int]) -> Sequence[StoredHeader]:
        return [
            StoredHeader(message.meta.uid, header_block(message.body))
            for message in self.fetch(folder, uids)
        ]

    def store_flags(
        self, folder: str, uids: Sequence[int], flags: frozenset[str], mode: FlagMode
    ) -> Sequence[MessageMeta]:
        with self._store.lock:
            f = self._folder(folder)
            present = [uid for uid in sorted(set(uids)) if uid in f.messages]
            changed: dict[int, frozenset[str]] = {}
            for uid in present:
                old = f.messages[uid].meta.flags
                new = {
                    FlagMode.REPLACE: flags,
                    FlagMode.ADD: old | flags,
                    FlagMode.REMOVE: old - flags,
                }[mode]
                if new != old:
                    changed[uid] = frozenset(new)
            if changed:
                f.highest_modseq += 1  # one modseq for the whole change, as the SQL store does
            for uid, new in changed.items():
                message = f.messages[uid]
                meta = replace(message.meta, flags=new, modseq=f.highest_modseq)
                f.messages[uid] = StoredMessage(meta, message.body)
            if changed:
                self._store.changed(self._address, folder)
            return [f.messages[uid].meta for uid in present]

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> Sequence[int]:
        with self._store.lock:
            f = self._folder(folder)
            allowed = None if uids is None else set(uids)
            gone = [
                uid
                for uid, m in sorted(f.messages.items())
                if "\\Deleted" in m.meta.flags and (allowed is None or uid in allowed)
            ]
            if gone:
                f.highest_modseq += 1
            for uid in gone:
                del f.messages[uid]
                f.expunged[uid] = f.highest_modseq
            if gone:
                self._store.changed(self._address, folder)
            return gone

    def close(self) -> None:
        self.closed = True


class MemoryAuthenticator:
    """Implements `Authenticator` over a MemoryStore."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def login(self, username: str, password: str) -> MemorySession:
        try:
            address = normalize_address(username)
        except ValueError:
            raise AuthenticationFailed() from None
        with self.store.lock:
            account = self.store.accounts.get(address)
            expected = account.password if account else "\0no account"
            if not hmac.compare_digest(expected.encode(), password.encode()) or account is None:
                raise AuthenticationFailed()
            return MemorySession(self.store, account.address)
