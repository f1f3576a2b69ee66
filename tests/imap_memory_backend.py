"""An in-memory mail store implementing the Protocols of `gateway.imap.backend`.

A real backend, like pymap's `backend/dict`: folders with UIDVALIDITY, UIDNEXT and modseqs,
flags, expunge, sessions that close. It keeps the SQL store's contract where the IMAP layer
can see it (addresses normalized as `gateway.store.accounts` does; one new modseq per
flag change, shared by the messages it changed; an expunge log for `changes_since`;
a `ChangeNotifier` signalled after every change; APPEND, COPY, MOVE, CREATE, DELETE,
RENAME and subscriptions under the rules of `gateway.imap.backend`), so the same tests
run on both
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
    AppendResult,
    AuthenticationFailed,
    CannotDoThat,
    ChangeNotifier,
    CopyResult,
    FlagMode,
    FolderChanges,
    FolderExists,
    FolderHasChildren,
    FolderInfo,
    FolderSnapshot,
    MailboxNotFound,
    MessageMeta,
    MessageTooLarge,
    StoredHeader,
    StoredMessage,
    TryCreate,
    Usage,
    header_block,
)
from gateway.store.accounts import normalize_address
from gateway.store.db import InvalidValue
from gateway.store.flags import canonical_flags
from gateway.store.folder_state import (
    INBOX,
    canonical_folder_name,
    checked_folder_name,
    is_inferior,
)

DEFAULT_FOLDERS = (
    FolderInfo("INBOX"),
    FolderInfo("Sent", ("\\Sent",)),
    FolderInfo("Drafts", ("\\Drafts",)),
    FolderInfo("Trash", ("\\Trash",)),
    FolderInfo("Junk", ("\\Junk",)),
    FolderInfo("Archive", ("\\Archive",)),
)
MAX_MESSAGE_BYTES = 50 * 1024 * 1024


@dataclass
class _Folder:
    info: FolderInfo
    uid_validity: int
    uid_next: int = 1
    highest_modseq: int = 1
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq of its expunge
    first_recent_uid: int = 1

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
            first_recent_uid=self.first_recent_uid,
            messages=tuple(self.messages[uid].meta for uid in sorted(self.messages)),
        )


@dataclass
class _Account:
    address: str
    password: str
    folders: dict[str, _Folder]
    subscribed: set[str] = field(default_factory=set)


class MemoryStore:
    """Accounts and their folders. `deliver` adds mail as the fetcher would."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, _Account] = {}
        self.notifier = ChangeNotifier()
        self.max_message_bytes = max_message_bytes
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
            self.accounts[address] = _Account(address, password, made, set(made))

    def new_folder(self, address: str, name: str, special_use: tuple[str, ...] = ()) -> _Folder:
        """A new, empty folder with a UIDVALIDITY greater than any before it."""
        with self.lock:
            self._validity += 1
            made = self.accounts[normalize_address(address)].folders[name] = _Folder(
                FolderInfo(name, special_use), self._validity
            )
            return made

    def folder(self, address: str, name: str) -> _Folder:
        with self.lock:
            try:
                return self.accounts[normalize_address(address)].folders[
                    canonical_folder_name(name)
                ]
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

    def claim_recent(self, folder: str) -> range:
        with self._store.lock:
            target = self._folder(folder)
            claimed = range(target.first_recent_uid, max(target.first_recent_uid, target.uid_next))
            target.first_recent_uid = claimed.stop
            return claimed

    def peek_recent(self, folder: str) -> range:
        with self._store.lock:
            target = self._folder(folder)
            return range(target.first_recent_uid, max(target.first_recent_uid, target.uid_next))

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
        self,
        folder: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Sequence[MessageMeta]:
        with self._store.lock:
            f = self._folder(folder)
            present = [
                uid
                for uid in sorted(set(uids))
                if uid in f.messages
                and (unchanged_since is None or f.messages[uid].meta.modseq <= unchanged_since)
            ]
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

    # -- `gateway.imap.backend.MailSession` -------------------------------------------

    def _account(self) -> _Account:
        if self.closed:
            raise RuntimeError("session used after close")
        return self._store.accounts[self._address]

    def _destination(self, name: str) -> _Folder:
        try:
            return self._folder(name)
        except MailboxNotFound:
            raise TryCreate(name) from None

    def append(
        self,
        folder: str,
        message: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        if len(message) > self._store.max_message_bytes:
            raise MessageTooLarge(self._store.max_message_bytes)
        if not message:
            raise CannotDoThat("an empty message cannot be stored")
        if internal_date is not None and internal_date.utcoffset() is None:
            raise CannotDoThat("datetime must be timezone-aware")
        try:
            kept = canonical_flags(flags)
        except InvalidValue as error:
            raise CannotDoThat(str(error)) from None
        with self._store.lock:
            target = self._destination(folder)
            uid = self._store.deliver(self._address, target.info.name, message, kept,
                                      internal_date)
            return AppendResult(target.uid_validity, uid)

    def _transfer(
        self, source: str, uids: Sequence[int], destination: str, *, move: bool
    ) -> CopyResult:
        with self._store.lock:
            origin = self._folder(source)
            target = self._destination(destination)
            present = [uid for uid in sorted(set(uids)) if uid in origin.messages]
            if not present:
                return CopyResult(target.uid_validity, ())
            target.highest_modseq += 1
            pairs = []
            for uid in present:
                message = origin.messages[uid]
                meta = replace(message.meta, uid=target.uid_next, modseq=target.highest_modseq)
                target.messages[target.uid_next] = StoredMessage(meta, message.body)
                pairs.append((uid, target.uid_next))
                target.uid_next += 1
            if move:
                origin.highest_modseq += 1
                for uid in present:
                    del origin.messages[uid]
                    origin.expunged[uid] = origin.highest_modseq
                self._store.changed(self._address, origin.info.name)
            self._store.changed(self._address, target.info.name)
            return CopyResult(target.uid_validity, tuple(pairs))

    def copy(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        return self._transfer(source, uids, destination, move=False)

    def move(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        if canonical_folder_name(source) == canonical_folder_name(destination):
            raise CannotDoThat("a message cannot be moved into the folder it is in")
        return self._transfer(source, uids, destination, move=True)

    @staticmethod
    def _checked(name: str) -> str:
        try:
            return checked_folder_name(name)
        except InvalidValue as error:
            raise CannotDoThat(str(error)) from None

    def create_folder(self, name: str) -> None:
        name = self._checked(name.removesuffix("/"))
        with self._store.lock:
            if name == INBOX or name in self._account().folders:
                raise FolderExists()
            self._store.new_folder(self._address, name)

    def delete_folder(self, name: str) -> None:
        name = canonical_folder_name(name)
        with self._store.lock:
            folders = self._account().folders
            if name == INBOX:
                raise CannotDoThat("INBOX cannot be deleted")
            if name not in folders:
                if any(is_inferior(other, name) for other in folders):
                    raise FolderHasChildren()
                raise MailboxNotFound(name)
            del folders[name]

    def rename_folder(self, old: str, new: str) -> None:
        old, new = canonical_folder_name(old), self._checked(new)
        with self._store.lock:
            account = self._account()
            folders = account.folders
            if new == INBOX or new in folders or any(is_inferior(n, new) for n in folders):
                raise FolderExists()
            if is_inferior(new, old):
                raise CannotDoThat("a mailbox cannot be renamed into one of its inferiors")
            if old == INBOX:
                inbox = folders[INBOX]
                moved = self._store.new_folder(self._address, new)
                moved.messages, inbox.messages = inbox.messages, {}
                moved.uid_next, moved.highest_modseq = inbox.uid_next, inbox.highest_modseq
                inbox.highest_modseq += 1
                for uid in moved.messages:
                    inbox.expunged[uid] = inbox.highest_modseq
                self._store.changed(self._address, INBOX)
                return
            moving = [n for n in folders if n == old or is_inferior(n, old)]
            if not moving:
                raise MailboxNotFound(old)
            for name in moving:
                folder = folders.pop(name)
                renamed = self._store.new_folder(
                    self._address, new + name[len(old):], folder.info.attributes
                )
                renamed.uid_next, renamed.highest_modseq = folder.uid_next, folder.highest_modseq
                renamed.messages = folder.messages
                renamed.first_recent_uid = folder.first_recent_uid
            for name in [n for n in account.subscribed if n == old or is_inferior(n, old)]:
                account.subscribed.discard(name)
                account.subscribed.add(new + name[len(old):])

    def subscribe(self, name: str) -> None:
        name = self._checked(name)
        with self._store.lock:
            self._account().subscribed.add(name)

    def unsubscribe(self, name: str) -> None:
        with self._store.lock:
            subscribed = self._account().subscribed
            if canonical_folder_name(name) not in subscribed:
                raise CannotDoThat("that name is not subscribed")
            subscribed.discard(canonical_folder_name(name))

    def list_subscribed(self) -> Sequence[str]:
        with self._store.lock:
            return sorted(self._account().subscribed)

    def usage(self) -> Usage:
        with self._store.lock:
            sizes = [
                m.meta.size
                for f in self._account().folders.values()
                for m in f.messages.values()
            ]
        return Usage(messages=len(sizes), octets=sum(sizes))


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
