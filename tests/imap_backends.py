"""The IMAP tests' storage: the in-memory store and the SQL store, seeded alike.

`make_backend(kind, tmp_path)` builds one backend of `KINDS`:

    memory     tests/imap_memory_backend.py
    sqlite     gateway.store (MailboxStore, StoreAuthenticator, KeyRing) on a SQLite file
    postgres   the same store on PostgreSQL at 127.0.0.1:5432, one fresh schema per
               backend; skipped when no server answers

The fixture `mail_backend` (loaded for every test by tests/conftest.py) runs a test once
per kind (ids `memory`, `sqlite`, `postgres`; `postgres` is marked `integration`); a
module-scoped fixture can take `BACKEND_PARAMS` and `make_backend` instead. Tests that
never reach storage take `memory_only`.

Every backend offers the same handles:

    authenticator      what the IMAP layer logs in with; it records the sessions it
                       opened (`sessions`), the number of UIDs of every fetch
                       (`fetch_calls`) and of every fetch_headers (`header_calls`), and
                       passes everything else through
    add_account, deliver
                       seeding, as provisioning and the fetcher do it: for the SQL
                       store `AccountStore.add` with a sealed seed (extra folders as
                       rows beside the standard ones), then `MailboxStore.deliver` per
                       message, over a second engine (another connection pool, as
                       another process would have)
    remove_folder      a folder vanishing under open sessions (the SQL store has no
                       call for it: its row is deleted, its messages go by cascade)
    other_session      a second, independent login to the same account: another client
    snapshot, uids, flags
                       what storage holds now, read through a fresh session
"""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert
from sqlmodel import col

from bridge.keys import AccountKeys, KdfCost, seal_seed
from gateway.imap.backend import (
    AppendResult,
    Authenticator,
    CopyResult,
    FlagMode,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    MailSession,
    MessageMeta,
    StoredHeader,
    StoredMessage,
    Usage,
)
from gateway.keyring import KeyRing
from gateway.store.accounts import AccountStore, normalize_address
from gateway.store.db import open_engine, writing
from gateway.store.mailbox import MailboxStore, StoreAuthenticator
from gateway.store.models import Folder
from tests.imap_memory_backend import DEFAULT_FOLDERS, MemoryAuthenticator, MemoryStore
from tests.postgres import fresh_schema

KINDS = ("memory", "sqlite", "postgres")
# Fixture params for every kind; `postgres` talks to a server, so it is an integration test.
BACKEND_PARAMS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
RELAYS = ("https://relay.example",)


class ObservedSession:
    """A `MailSession` passed through, counting fetched UIDs and noting `close`."""

    def __init__(
        self, inner: MailSession, fetch_calls: list[int], header_calls: list[int] | None = None
    ) -> None:
        self.inner = inner
        self.closed = False
        self._fetch_calls = fetch_calls
        self._header_calls = [] if header_calls is None else header_calls

    @property
    def address(self) -> str:
        return self.inner.address

    def list_folders(self) -> Sequence[FolderInfo]:
        return self.inner.list_folders()

    def snapshot(self, folder: str) -> FolderSnapshot:
        return self.inner.snapshot(folder)

    def claim_recent(self, folder: str) -> range:
        return self.inner.claim_recent(folder)

    def peek_recent(self, folder: str) -> range:
        return self.inner.peek_recent(folder)

    def changes_since(self, folder: str, modseq: int) -> FolderChanges:
        return self.inner.changes_since(folder, modseq)

    async def wait_for_change(self, folder: str, modseq: int, timeout: float) -> bool:
        return await self.inner.wait_for_change(folder, modseq, timeout)

    def fetch(self, folder: str, uids: Sequence[int]) -> Sequence[StoredMessage]:
        self._fetch_calls.append(len(uids))
        return self.inner.fetch(folder, uids)

    def fetch_headers(self, folder: str, uids: Sequence[int]) -> Sequence[StoredHeader]:
        self._header_calls.append(len(uids))
        return self.inner.fetch_headers(folder, uids)

    def store_flags(
        self,
        folder: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Sequence[MessageMeta]:
        return self.inner.store_flags(folder, uids, flags, mode, unchanged_since)

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> Sequence[int]:
        return self.inner.expunge(folder, uids)

    def close(self) -> None:
        self.inner.close()
        self.closed = True

    # `gateway.imap.backend.MailSession`, passed through.

    def append(
        self,
        folder: str,
        message: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        return self.inner.append(folder, message, flags, internal_date)

    def copy(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        return self.inner.copy(source, uids, destination)

    def move(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        return self.inner.move(source, uids, destination)

    def create_folder(self, name: str) -> None:
        self.inner.create_folder(name)

    def delete_folder(self, name: str) -> None:
        self.inner.delete_folder(name)

    def rename_folder(self, old: str, new: str) -> None:
        self.inner.rename_folder(old, new)

    def subscribe(self, name: str) -> None:
        self.inner.subscribe(name)

    def unsubscribe(self, name: str) -> None:
        self.inner.unsubscribe(name)

    def list_subscribed(self) -> Sequence[str]:
        return self.inner.list_subscribed()

    def usage(self) -> Usage:
        return self.inner.usage()


class ObservedAuthenticator:
    """An `Authenticator` passed through; every session it opens is an ObservedSession."""

    def __init__(self, inner: Authenticator) -> None:
        self.inner = inner
        self.sessions: list[ObservedSession] = []
        self.fetch_calls: list[int] = []  # number of UIDs asked for, per MailSession.fetch
        self.header_calls: list[int] = []  # the same per MailSession.fetch_headers

    def login(self, username: str, password: str) -> ObservedSession:
        session = ObservedSession(
            self.inner.login(username, password), self.fetch_calls, self.header_calls
        )
        self.sessions.append(session)
        return session


class MailBackend(abc.ABC):
    """One storage backend with its accounts, as the IMAP tests see it."""

    kind: str

    def __init__(self, server_side: Authenticator, other_side: Authenticator) -> None:
        self.authenticator = ObservedAuthenticator(server_side)
        self._other_side = other_side
        self._passwords: dict[str, str] = {}

    @property
    def sessions(self) -> list[ObservedSession]:
        return self.authenticator.sessions

    @property
    def fetch_calls(self) -> list[int]:
        return self.authenticator.fetch_calls

    @property
    def header_calls(self) -> list[int]:
        return self.authenticator.header_calls

    def add_account(self, address: str, password: str, extra_folders: Iterable[str] = ()) -> None:
        """An account with INBOX, Sent, Drafts, Trash and `extra_folders` (names with "/")."""
        self._passwords[normalize_address(address)] = password
        self._add_account(address, password, tuple(extra_folders))

    @abc.abstractmethod
    def _add_account(self, address: str, password: str, extra_folders: tuple[str, ...]) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def deliver(
        self,
        address: str,
        folder: str,
        body: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> int:
        """Store a message as the fetcher does; its UID."""
        raise NotImplementedError

    @abc.abstractmethod
    def remove_folder(self, address: str, folder: str) -> None:
        """Remove a folder and its mail underneath every session."""
        raise NotImplementedError

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the backend holds (database connections)."""
        raise NotImplementedError

    def other_session(self, address: str) -> MailSession:
        return self._other_side.login(address, self._passwords[normalize_address(address)])

    def snapshot(self, address: str, folder: str) -> FolderSnapshot:
        session = self.other_session(address)
        try:
            return session.snapshot(folder)
        finally:
            session.close()

    def uids(self, address: str, folder: str) -> list[int]:
        return [m.uid for m in self.snapshot(address, folder).messages]

    def flags(self, address: str, folder: str, uid: int) -> frozenset[str]:
        (meta,) = [m for m in self.snapshot(address, folder).messages if m.uid == uid]
        return meta.flags


class MemoryBackend(MailBackend):
    kind = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()
        super().__init__(MemoryAuthenticator(self.store), MemoryAuthenticator(self.store))

    def _add_account(self, address: str, password: str, extra_folders: tuple[str, ...]) -> None:
        folders = DEFAULT_FOLDERS + tuple(FolderInfo(name) for name in extra_folders)
        self.store.add_account(address, password, folders)

    def deliver(
        self,
        address: str,
        folder: str,
        body: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> int:
        return self.store.deliver(address, folder, body, flags, internal_date)

    def remove_folder(self, address: str, folder: str) -> None:
        self.store.remove_folder(address, folder)

    def close(self) -> None:
        """Nothing to release: the mail lives in memory only."""


class SqlBackend(MailBackend):
    """The gateway's store. The IMAP side and the outside (deliveries, other sessions,
    inspection) use separate engines on the same database."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self._engine = open_engine(url)
        self._outside = open_engine(url)
        self._accounts = AccountStore(self._outside)
        self._mailboxes = MailboxStore(self._outside)
        self._keys: dict[str, AccountKeys] = {}
        super().__init__(
            StoreAuthenticator(KeyRing(AccountStore(self._engine)), MailboxStore(self._engine)),
            StoreAuthenticator(KeyRing(self._accounts), self._mailboxes),
        )

    @property
    def database_path(self) -> str:
        """The SQLite file, for tests that lock it as another process would."""
        return str(self._engine.url.database)

    def _add_account(self, address: str, password: str, extra_folders: tuple[str, ...]) -> None:
        keys = AccountKeys.generate()
        sealed = seal_seed(keys.seed, password.encode(), KdfCost.minimum())
        self._accounts.add(address, sealed, keys.public, RELAYS)
        self._keys[normalize_address(address)] = keys
        if extra_folders:
            account_id = self._account_id(address)
            with writing(self._outside) as connection:
                connection.execute(
                    insert(Folder),
                    [
                        {
                            "account_id": account_id,
                            "name": name,
                            "special_use": None,
                            "uid_validity": int(time.time()),
                            "uid_next": 1,
                            "highest_modseq": 1,
                        }
                        for name in extra_folders
                    ],
                )

    def _account_id(self, address: str) -> int:
        account = self._accounts.get(address)
        assert account is not None
        return account.id

    def deliver(
        self,
        address: str,
        folder: str,
        body: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> int:
        uid = self._mailboxes.deliver(
            address,
            self._keys[normalize_address(address)],
            folder,
            body,
            internal_date=internal_date or datetime.now(UTC),
            flags=frozenset(flags),
        )
        assert uid is not None  # no envelope id: never a duplicate
        return uid

    def remove_folder(self, address: str, folder: str) -> None:
        account_id = self._account_id(address)
        with writing(self._outside) as connection:
            connection.execute(
                delete(Folder).where(
                    col(Folder.account_id) == account_id, col(Folder.name) == folder
                )
            )

    def close(self) -> None:
        self._engine.dispose()
        self._outside.dispose()


@contextmanager
def make_backend(kind: str, tmp_path: Path) -> Iterator[MailBackend]:
    """A backend of this kind with no accounts yet, closed (and its schema dropped) on exit."""
    if kind == "memory":
        yield MemoryBackend()
        return
    if kind == "sqlite":
        backend = SqlBackend(kind, f"sqlite:///{tmp_path}/imap-{secrets.token_hex(4)}.db")
        try:
            yield backend
        finally:
            backend.close()
        return
    if kind != "postgres":
        raise ValueError(f"unknown backend kind {kind!r}; expected one of {KINDS}")
    with fresh_schema("sg_imap") as url:
        backend = SqlBackend(kind, url)
        try:
            yield backend
        finally:
            backend.close()


@pytest.fixture(params=BACKEND_PARAMS)
def mail_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MailBackend]:
    """An empty backend of each kind in turn."""
    with make_backend(request.param, tmp_path) as backend:
        yield backend


# For tests that never reach storage: run them once, on the memory backend.
memory_only = pytest.mark.parametrize("mail_backend", ["memory"], indirect=True)
