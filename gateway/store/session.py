"""`StoreSession`: one logged-in account's mail session over the store (`MailSession`).

A session holds the account's unlocked keys until `close`; every call opens its own
short transaction. Snapshots and `changes_since` read only metadata columns, never a
sealed blob; `fetch` opens messages and `fetch_headers` header blocks in memory only.

Every commit that changes a folder (delivery, flags, expunge, APPEND, COPY, MOVE) is
signalled afterwards to the `ChangeNotifier` of the store's database in this process
(`changes_notifier`), keyed by account id and folder name, so that IMAP IDLE wakes up at
once; `changes_since` then reads only the rows whose modseq is above the session's,
through the (folder, modseq) indexes of `message` and `expunged_message`.

A session's calls raise only `BackendError`s: a database error becomes
`StorageUnavailable` when the same call may work later (SQLite busy, locked, cannot open,
I/O or disk full; every PostgreSQL OperationalError: connection lost, lock timeout,
shutdown), `StorageFailed` otherwise (no such table, corrupt file, and the store's own
errors such as `SessionClosed`). A message that fails to open is skipped and its row id
logged; the IMAP client sees no error. This module never logs or raises with message
content or addresses.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Row, bindparam, delete, func, select, update
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import col

from bridge.keys import AccountKeys
from gateway.imap.backend import (
    AppendResult,
    BackendError,
    ChangeNotifier,
    CopyResult,
    FlagMode,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    MailboxNotFound,
    MessageMeta,
    StorageFailed,
    StorageUnavailable,
    StoredHeader,
    StoredMessage,
    Usage,
)
from gateway.store import append, folders, header_cache, recent, transfer
from gateway.store.db import SessionClosed, StoreError, reading, writing
from gateway.store.flags import DELETED, FlagCache, canonical_flags, flags_text
from gateway.store.folder_rows import (
    IN_CHUNK,
    FolderRow,
    folder_row,
    log_expunged,
    take_modseq,
    uid_chunks,
)
from gateway.store.folder_state import canonical_folder_name, subscribed
from gateway.store.models import ExpungedMessage, Folder, Message, zoned
from gateway.store.sealing import open_message
from gateway.store.snapshots import merged, snapshot_cache

log = logging.getLogger(__name__)

# The largest message APPEND stores (the default of the gateway's `max_message_bytes`).
MAX_APPEND_BYTES = 50 * 1024 * 1024

_ID, _FOLDER_ID, _UID, _FLAGS, _DATE, _OFFSET, _SIZE, _MODSEQ = (
    col(Message.id),
    col(Message.folder_id),
    col(Message.uid),
    col(Message.flags),
    col(Message.internal_date),
    col(Message.internal_offset),
    col(Message.size),
    col(Message.modseq),
)
_SELECT_FOLDERS = (
    select(col(Folder.name), col(Folder.special_use))
    .where(col(Folder.account_id) == bindparam("account_id"))
    .order_by(col(Folder.id))
)
_IN_FOLDER = _FOLDER_ID == bindparam("folder_id")
_UID_IN = _UID.in_(bindparam("uids", expanding=True))
_META = (_UID, _FLAGS, _DATE, _OFFSET, _SIZE, _MODSEQ)  # what `_metas` reads
_SELECT_META = select(*_META).where(_IN_FOLDER).order_by(_UID)
_SELECT_SEALED = (
    select(_ID, col(Message.seal_id), col(Message.sealed), *_META)
    .where(_IN_FOLDER, _UID_IN)
    .order_by(_UID)
)
_SELECT_FOR_STORE = (
    select(_ID, *_META).where(_IN_FOLDER, _UID_IN).order_by(_UID)
)
_UPDATE_FLAGS = (
    update(Message)
    .where(_ID == bindparam("row_id"))
    .values(flags=bindparam("new_flags"), modseq=bindparam("new_modseq"))
)
_SELECT_FLAGS = select(_ID, _UID, _FLAGS).where(_IN_FOLDER)
_SELECT_FLAGS_OF = _SELECT_FLAGS.where(_UID_IN)
_DELETE_MESSAGES = delete(Message).where(_ID.in_(bindparam("ids", expanding=True)))
_MODSEQ_RANGE = (bindparam("since") < _MODSEQ, _MODSEQ <= bindparam("upto"))
_SELECT_CHANGED = (
    select(*_META).where(_IN_FOLDER, *_MODSEQ_RANGE).order_by(_UID)
)
_EXPUNGED_MODSEQ = col(ExpungedMessage.modseq)
_SELECT_EXPUNGED = (
    select(col(ExpungedMessage.uid))
    .where(
        col(ExpungedMessage.folder_id) == bindparam("folder_id"),
        bindparam("since") < _EXPUNGED_MODSEQ,
        _EXPUNGED_MODSEQ <= bindparam("upto"),
    )
    .order_by(col(ExpungedMessage.uid))
)

_SELECT_USAGE = (
    select(func.count(), func.coalesce(func.sum(_SIZE), 0))
    .select_from(Message)
    .join(Folder, col(Folder.id) == _FOLDER_ID)
    .where(col(Folder.account_id) == bindparam("account_id"))
)

_NOTIFIERS: dict[str, ChangeNotifier] = {}
_NOTIFIERS_LOCK = threading.Lock()


def changes_notifier(engine: Engine) -> ChangeNotifier:
    """The one notifier of this process for the database behind `engine` (every
    MailboxStore on it, whatever its engine, signals and waits on the same one)."""
    key = engine.url.render_as_string(hide_password=True)
    with _NOTIFIERS_LOCK:
        notifier = _NOTIFIERS.get(key)
        if notifier is None:
            notifier = _NOTIFIERS[key] = ChangeNotifier()
        return notifier


def _changes(connection: Connection, target: FolderRow, modseq: int) -> FolderChanges:
    """What changed in `target` after `modseq`, up to its highest modseq as read."""
    params = {"folder_id": target.id, "since": modseq, "upto": target.highest_modseq}
    rows = connection.execute(_SELECT_CHANGED, params).all()
    expunged = connection.execute(_SELECT_EXPUNGED, params).scalars().all()
    return FolderChanges(
        uid_validity=target.uid_validity,
        uid_next=target.uid_next,
        highest_modseq=target.highest_modseq,
        changed=_metas(rows),
        expunged=tuple(expunged),
    )


def _metas(
    rows: Iterable[Row[int, str, datetime, int, int, int]],
) -> tuple[MessageMeta, ...]:
    """MessageMeta of (uid, flags, internal date, its offset, size, modseq) rows."""
    parse_flags = FlagCache()
    return tuple(
        MessageMeta(uid=uid, flags=parse_flags(flags), internal_date=zoned(date, offset),
                    size=size, modseq=seq)
        for uid, flags, date, offset, size, seq in rows
    )


# SQLite's primary result codes for a database that may answer if asked again.
_SQLITE_TRANSIENT = frozenset(
    {
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_CANTOPEN",
        "SQLITE_IOERR",
        "SQLITE_FULL",
        "SQLITE_NOMEM",
        "SQLITE_PROTOCOL",
        "SQLITE_READONLY",
        "SQLITE_INTERRUPT",
    }
)


def _imap_error(error: SQLAlchemyError | StoreError) -> BackendError:
    if isinstance(error, PoolTimeout | DisconnectionError):
        return StorageUnavailable()
    if isinstance(error, OperationalError):
        name = getattr(error.orig, "sqlite_errorname", None)
        if name is None or "_".join(name.split("_")[:2]) in _SQLITE_TRANSIENT:
            return StorageUnavailable()
    return StorageFailed()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _raises_backend_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """The session method, raising only `BackendError`s (see the module docstring)."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (SQLAlchemyError, StoreError) as error:
            raise _imap_error(error) from error

    return call



class StoreSession:
    """One logged-in account's view of its folders (implements `MailSession`)."""

    def __init__(
        self,
        engine: Engine,
        account_id: int,
        address: str,
        keys: AccountKeys,
        notifier: ChangeNotifier | None = None,
        *,
        max_message_bytes: int = MAX_APPEND_BYTES,
    ) -> None:
        self._engine = engine
        self._account_id = account_id
        self._address = address
        self._keys: AccountKeys | None = keys
        self._notifier = notifier or changes_notifier(engine)
        self._snapshots = snapshot_cache(engine.url.render_as_string(hide_password=True))
        self._max_message_bytes = max_message_bytes

    @property
    def address(self) -> str:
        return self._address

    def _storage_key(self) -> bytes:
        if self._keys is None:
            raise SessionClosed()
        return self._keys.storage_key

    @_raises_backend_errors
    def list_folders(self) -> Sequence[FolderInfo]:
        self._storage_key()
        with reading(self._engine) as connection:
            rows = connection.execute(_SELECT_FOLDERS, {"account_id": self._account_id}).all()
        names = [name for name, _ in rows]
        folders = []
        for name, special_use in rows:
            has_children = any(other.startswith(name + "/") for other in names)
            attributes = ["\\HasChildren" if has_children else "\\HasNoChildren"]
            if special_use:
                attributes.append(special_use)
            folders.append(FolderInfo(name=name, attributes=tuple(attributes)))
        return folders

    @_raises_backend_errors
    def snapshot(self, folder: str) -> FolderSnapshot:
        """The folder's metadata: the process's cached copy (`gateway.store.snapshots`)
        brought up to date with what changed since, or else every row read."""
        self._storage_key()
        with reading(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder)
            key = (self._account_id, target.id)
            # \Recent is claimed without a new modseq: read it fresh every time.
            first_recent = recent.first_recent_uid(connection, target.id)
            cached = self._snapshots.get(key, target.uid_validity)
            if cached is not None and cached.highest_modseq == target.highest_modseq:
                snapshot = cached
            elif cached is not None and cached.highest_modseq < target.highest_modseq:
                changes = _changes(connection, target, cached.highest_modseq)
                snapshot = merged(cached, target.name, changes)
            else:
                rows = connection.execute(_SELECT_META, {"folder_id": target.id}).all()
                snapshot = FolderSnapshot(
                    name=target.name,
                    uid_validity=target.uid_validity,
                    uid_next=target.uid_next,
                    highest_modseq=target.highest_modseq,
                    first_recent_uid=first_recent,
                    messages=_metas(rows),
                )
        self._snapshots.put(key, snapshot)
        return replace(snapshot, name=target.name, first_recent_uid=first_recent)

    @_raises_backend_errors
    def claim_recent(self, folder: str) -> range:
        self._storage_key()
        with writing(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder, lock=True)
            return recent.claim(connection, target.id, target.uid_next)

    @_raises_backend_errors
    def peek_recent(self, folder: str) -> range:
        self._storage_key()
        with reading(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder)
            first = recent.first_recent_uid(connection, target.id)
            return range(first, max(first, target.uid_next))

    @_raises_backend_errors
    def changes_since(self, folder: str, modseq: int) -> FolderChanges:
        """Rows changed and UIDs expunged after `modseq`, up to the folder's highest modseq
        read first (a change committed meanwhile is left for the next call)."""
        self._storage_key()
        with reading(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder)
            return _changes(connection, target, modseq)

    async def wait_for_change(self, folder: str, modseq: int, timeout: float) -> bool:
        key = (self._account_id, canonical_folder_name(folder))
        return await self._notifier.wait(key, modseq, timeout)

    @_raises_backend_errors
    def fetch(self, folder: str, uids: Sequence[int]) -> Sequence[StoredMessage]:
        """Messages opened in memory, in UID order; missing or unopenable ones are skipped."""
        storage_key = self._storage_key()
        parse_flags = FlagCache()
        result: list[StoredMessage] = []
        with reading(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder)
            for chunk in uid_chunks(uids):
                rows = connection.execute(_SELECT_SEALED, {"folder_id": target.id, "uids": chunk})
                for row_id, seal_id, sealed, uid, flags, date, offset, size, modseq in rows:
                    body = open_message(storage_key, self._account_id, seal_id, size, sealed)
                    if body is None:
                        log.warning("stored message %s cannot be opened; skipped", row_id)
                        continue
                    meta = MessageMeta(
                        uid=uid, flags=parse_flags(flags), internal_date=zoned(date, offset),
                        size=size, modseq=modseq,
                    )
                    result.append(StoredMessage(meta=meta, body=body))
        return result

    @_raises_backend_errors
    def fetch_headers(self, folder: str, uids: Sequence[int]) -> Sequence[StoredHeader]:
        """Header blocks opened in memory, in UID order, skipped as in `fetch`; read from
        the sealed header cache where it holds them (`gateway.store.header_cache`), and
        the message blobs never."""
        storage_key = self._storage_key()
        with reading(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder)
            return header_cache.read_headers(
                connection, storage_key, self._account_id, target.id, uids
            )

    @_raises_backend_errors
    def store_flags(
        self,
        folder: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Sequence[MessageMeta]:
        """Change flags; messages whose flags change share the folder's next modseq. The
        UNCHANGEDSINCE test reads the modseqs under the folder's write lock."""
        self._storage_key()
        given = canonical_flags(flags)
        parse_flags = FlagCache()
        with writing(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder, lock=True)
            current: list[tuple[int, MessageMeta]] = []
            for chunk in uid_chunks(uids):
                rows = connection.execute(
                    _SELECT_FOR_STORE, {"folder_id": target.id, "uids": chunk}
                )
                current.extend(
                    (row_id, MessageMeta(uid, parse_flags(text), zoned(date, offset), size, modseq))
                    for row_id, uid, text, date, offset, size, modseq in rows
                    if row_id is not None
                    and (unchanged_since is None or modseq <= unchanged_since)
                )
            changed: dict[int, frozenset[str]] = {}
            for row_id, meta in current:
                if mode is FlagMode.REPLACE:
                    new = given
                elif mode is FlagMode.ADD:
                    new = meta.flags | given
                else:
                    new = meta.flags - given
                if new != meta.flags:
                    changed[row_id] = new
            if not changed:
                return [meta for _, meta in current]
            modseq = take_modseq(connection, target.id)
            connection.execute(
                _UPDATE_FLAGS,
                [
                    {"row_id": row_id, "new_flags": flags_text(new), "new_modseq": modseq}
                    for row_id, new in changed.items()
                ],
            )
        self._notifier.changed((self._account_id, target.name), modseq)
        return [
            MessageMeta(meta.uid, changed[row_id], meta.internal_date, meta.size, modseq)
            if row_id in changed
            else meta
            for row_id, meta in current
        ]

    @_raises_backend_errors
    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> Sequence[int]:
        """Delete messages flagged \\Deleted (only among `uids` if given); their UIDs, ascending."""
        self._storage_key()
        with writing(self._engine) as connection:
            target = folder_row(connection, self._account_id, folder, lock=True)
            if uids is None:
                rows = connection.execute(_SELECT_FLAGS, {"folder_id": target.id}).all()
            else:
                rows = []
                for chunk in uid_chunks(uids):
                    params = {"folder_id": target.id, "uids": chunk}
                    rows.extend(connection.execute(_SELECT_FLAGS_OF, params))
            doomed = sorted(
                (uid, row_id) for row_id, uid, text in rows if DELETED in text.split()
            )
            if not doomed:
                return []
            for start in range(0, len(doomed), IN_CHUNK):
                ids = [row_id for _, row_id in doomed[start : start + IN_CHUNK]]
                connection.execute(_DELETE_MESSAGES, {"ids": ids})
            modseq = take_modseq(connection, target.id)
            log_expunged(connection, target.id, [uid for uid, _ in doomed], modseq)
        self._notifier.changed((self._account_id, target.name), modseq)
        return [uid for uid, _ in doomed]

    # -- writing mail and folders (`gateway.imap.backend.MailSession`) -------------

    @_raises_backend_errors
    def append(
        self,
        folder: str,
        message: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        result = append.append(
            self._engine, self._account_id, self._storage_key(), folder, message, flags,
            internal_date, limit=self._max_message_bytes,
        )
        self._signal(folder)
        return result

    @_raises_backend_errors
    def copy(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        key = self._storage_key()
        result = transfer.copy(self._engine, self._account_id, key, source, uids, destination)
        self._signal(destination)
        return result

    @_raises_backend_errors
    def move(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        key = self._storage_key()
        result = transfer.move(self._engine, self._account_id, key, source, uids, destination)
        self._signal(source, destination)
        return result

    @_raises_backend_errors
    def create_folder(self, name: str) -> None:
        self._write(folders.create, name)

    @_raises_backend_errors
    def delete_folder(self, name: str) -> None:
        self._write(folders.delete_folder, name)

    @_raises_backend_errors
    def rename_folder(self, old: str, new: str) -> None:
        self._write(folders.rename, old, new)
        if canonical_folder_name(old) == "INBOX":
            self._signal("INBOX")  # its messages moved out (RFC 3501 6.3.5)

    @_raises_backend_errors
    def subscribe(self, name: str) -> None:
        self._write(folders.subscribe, name)

    @_raises_backend_errors
    def unsubscribe(self, name: str) -> None:
        self._write(folders.unsubscribe, name)

    def _signal(self, *names: str) -> None:
        """Wake sessions waiting on these folders (after a commit that changed them)."""
        with reading(self._engine) as connection:
            for name in names:
                try:
                    target = folder_row(connection, self._account_id, name)
                except MailboxNotFound:
                    continue
                self._notifier.changed((self._account_id, target.name), target.highest_modseq)

    def _write(
        self,
        operation: Callable[Concatenate[Connection, int, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """`operation` of this account in a write transaction."""
        self._storage_key()
        with writing(self._engine) as connection:
            return operation(connection, self._account_id, *args, **kwargs)

    @_raises_backend_errors
    def list_subscribed(self) -> Sequence[str]:
        self._storage_key()
        with reading(self._engine) as connection:
            return subscribed(connection, self._account_id)

    @_raises_backend_errors
    def usage(self) -> Usage:
        self._storage_key()
        with reading(self._engine) as connection:
            messages, octets = connection.execute(
                _SELECT_USAGE, {"account_id": self._account_id}
            ).one()
        return Usage(messages=int(messages), octets=int(octets))

    def close(self) -> None:
        """Forget the keys; every later call raises `SessionClosed`."""
        self._keys = None
