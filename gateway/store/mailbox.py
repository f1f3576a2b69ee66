"""The mailbox store: sealed messages, flags, UIDs, modseq and envelope dedup.

Every message is sealed before it reaches the database and opened only in memory,
by the session of a logged-in account:

    sealed        = nonce(24, random) || XChaCha20-Poly1305(storage_key, message, ad)
    ad            = b"sealgate-store-v1\\0" || account id (8, big-endian) || seal_id (16)
                    || size (8)
    sealed_header = nonce(24, random) || XChaCha20-Poly1305(storage_key, header, header_ad)
    header_ad     = b"sealgate-store-header-v1\\0" || account id (8) || seal_id (16)
                    || size (8) || header length (8)

`header` is the message's header block (`gateway.imap.backend.header_block`), sealed
beside the message when it is delivered so that header-only FETCH and SEARCH open a few
hundred octets instead of the whole message.

`storage_key` comes from the account's unlocked seed (`AccountKeys.storage_key`).
The associated data binds a message to its account, to a random per-message
`seal_id` kept in its row (swapping sealed blobs between rows is detected) and to
its size (RFC822.SIZE cannot disagree with the body); the two prefixes tell a header
blob from a message blob, so neither opens in the other's place. It deliberately does not
bind the folder or UID: a MOVE or COPY moves or copies the row without re-sealing.

A message that fails to open is skipped and its row id logged; the IMAP client sees
no error. Snapshots read only metadata columns, never the sealed blob.

Every commit that changes a folder (delivery, flags, expunge) is signalled afterwards to
the `ChangeNotifier` of the store's database in this process (`changes_notifier`), keyed
by account id and folder name, so that IMAP IDLE wakes up at once; `changes_since` then
reads only the rows whose modseq is above the session's, through the (folder, modseq)
indexes of `message` and `expunged_message`.

`MailboxStore.session` and `StoreAuthenticator` implement the Protocols in
`gateway.imap.backend`. A session's calls raise only `BackendError`s: a database error
becomes `StorageUnavailable` when the same call may work later (SQLite busy, locked,
cannot open, I/O or disk full; every PostgreSQL OperationalError: connection lost,
lock timeout, shutdown), `StorageFailed` otherwise (no such table, corrupt file, and
the store's own errors such as `SessionClosed`). This module never logs or raises with
message content or addresses.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import nacl.bindings
import nacl.exceptions
import nacl.utils
from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import col

from bridge.keys import AccountKeys
from gateway.imap.backend import (
    AppendResult,
    AuthenticationFailed,
    BackendError,
    ChangeNotifier,
    CopyResult,
    FlagMode,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    MailboxNotFound,
    MailSession,
    MessageMeta,
    StorageFailed,
    StorageUnavailable,
    StoredHeader,
    StoredMessage,
)
from gateway.store import header_cache
from gateway.store.accounts import find_account, normalize_address
from gateway.store.db import (
    InvalidValue,
    KeyMismatch,
    SessionClosed,
    StoreError,
    UnknownAccount,
    reading,
    utc,
    utc_now,
    writing,
)
from gateway.store.folder_state import (
    canonical_folder_name,
    insert_folder,
    set_up_folders,
    subscribed,
)
from gateway.store.models import (
    ExpungedMessage,
    Folder,
    Message,
    RejectionNotice,
    SeenEnvelope,
)
from gateway.store.sealing import (
    SEAL_ID_LEN,
    open_message,
    seal_header,
    seal_message,
)

if TYPE_CHECKING:
    from gateway.keyring import KeyRing

log = logging.getLogger(__name__)

DELIVERED = "delivered"
REJECTED = "rejected"
_IN_CHUNK = 500  # bound parameters per IN (...) list
_SYSTEM_FLAGS = {
    flag.lower(): flag for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}
_DELETED = "\\Deleted"
_MAX_FOLDER_NAME = 512


# -- flags -----------------------------------------------------------------------------


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical case; `\\Recent` (session-only) dropped."""
    result: set[str] = set()
    for flag in flags:
        if not flag or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in flag):
            raise InvalidValue("flag is empty or holds a space or control character")
        lowered = flag.lower()
        if lowered == "\\recent":
            continue
        result.add(_SYSTEM_FLAGS.get(lowered, flag))
    return frozenset(result)


def _flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


class _FlagCache:
    """Parses flag columns, sharing one frozenset per distinct value (most repeat)."""

    def __init__(self) -> None:
        self._parsed: dict[str, frozenset[str]] = {}

    def __call__(self, text: str) -> frozenset[str]:
        parsed = self._parsed.get(text)
        if parsed is None:
            parsed = self._parsed[text] = frozenset(text.split())
        return parsed


# -- statements (built once: building a statement costs more than running it here) ------

_ID, _FOLDER_ID, _UID, _FLAGS, _DATE, _SIZE, _MODSEQ = (
    col(Message.id),
    col(Message.folder_id),
    col(Message.uid),
    col(Message.flags),
    col(Message.internal_date),
    col(Message.size),
    col(Message.modseq),
)
_SELECT_FOLDER = select(
    col(Folder.id),
    col(Folder.name),
    col(Folder.uid_validity),
    col(Folder.uid_next),
    col(Folder.highest_modseq),
).where(col(Folder.account_id) == bindparam("account_id"), col(Folder.name) == bindparam("name"))
# Writers lock the folder row first (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes).
_LOCK_FOLDER = _SELECT_FOLDER.with_for_update()
_SELECT_FOLDERS = (
    select(col(Folder.name), col(Folder.special_use))
    .where(col(Folder.account_id) == bindparam("account_id"))
    .order_by(col(Folder.id))
)
_TAKE_MODSEQ = (
    update(Folder)
    .where(col(Folder.id) == bindparam("folder_id"))
    .values(highest_modseq=col(Folder.highest_modseq) + 1)
    .returning(col(Folder.highest_modseq))
)
_TAKE_UIDS_AND_MODSEQS = (
    update(Folder)
    .where(col(Folder.id) == bindparam("folder_id"))
    .values(
        uid_next=col(Folder.uid_next) + bindparam("count"),
        highest_modseq=col(Folder.highest_modseq) + bindparam("count"),
    )
    .returning(col(Folder.uid_next), col(Folder.highest_modseq))
)
_SELECT_SEEN = select(col(SeenEnvelope.outcome)).where(
    col(SeenEnvelope.account_id) == bindparam("account_id"),
    col(SeenEnvelope.envelope_id) == bindparam("envelope_id"),
)
_INSERT_SEEN = insert(SeenEnvelope)
_INSERT_MESSAGE = insert(Message)
_IN_FOLDER = _FOLDER_ID == bindparam("folder_id")
_UID_IN = _UID.in_(bindparam("uids", expanding=True))
_SELECT_META = select(_UID, _FLAGS, _DATE, _SIZE, _MODSEQ).where(_IN_FOLDER).order_by(_UID)
_SELECT_SEALED = (
    select(_ID, col(Message.seal_id), col(Message.sealed), _UID, _FLAGS, _DATE, _SIZE, _MODSEQ)
    .where(_IN_FOLDER, _UID_IN)
    .order_by(_UID)
)
_SELECT_FOR_STORE = (
    select(_ID, _UID, _FLAGS, _DATE, _SIZE, _MODSEQ).where(_IN_FOLDER, _UID_IN).order_by(_UID)
)
_UPDATE_FLAGS = (
    update(Message)
    .where(_ID == bindparam("row_id"))
    .values(flags=bindparam("new_flags"), modseq=bindparam("new_modseq"))
)
_SELECT_FLAGS = select(_ID, _UID, _FLAGS).where(_IN_FOLDER)
_SELECT_FLAGS_OF = _SELECT_FLAGS.where(_UID_IN)
_DELETE_MESSAGES = delete(Message).where(_ID.in_(bindparam("ids", expanding=True)))
_INSERT_EXPUNGED = insert(ExpungedMessage)
_MODSEQ_RANGE = (bindparam("since") < _MODSEQ, _MODSEQ <= bindparam("upto"))
_SELECT_CHANGED = (
    select(_UID, _FLAGS, _DATE, _SIZE, _MODSEQ).where(_IN_FOLDER, *_MODSEQ_RANGE).order_by(_UID)
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


# -- shared queries --------------------------------------------------------------------


def _account_id(connection: Connection, address: str, keys: AccountKeys | None = None) -> int:
    """The account's id; `UnknownAccount`, or `KeyMismatch` if `keys` are not the account's."""
    account = find_account(connection, address)
    if account is None:
        raise UnknownAccount()
    # The mailbox key comes from the first seed, as the storage key does: keys of any
    # generation of this account (before or after a rotation) seal and open its mail.
    if keys is not None and keys.public.mailbox_key != account.public.mailbox_key:
        raise KeyMismatch()
    return account.id


@dataclass(frozen=True)
class _Folder:
    id: int
    name: str
    uid_validity: int
    uid_next: int
    highest_modseq: int


def _folder(connection: Connection, account_id: int, name: str, *, lock: bool = False) -> _Folder:
    params = {"account_id": account_id, "name": canonical_folder_name(name)}
    row = connection.execute(_LOCK_FOLDER if lock else _SELECT_FOLDER, params).first()
    if row is None:
        raise MailboxNotFound(name)
    folder_id, folder_name, uid_validity, uid_next, highest_modseq = row
    assert folder_id is not None  # noqa: S101 - a primary key read back is never NULL
    return _Folder(folder_id, folder_name, uid_validity, uid_next, highest_modseq)


def _take_modseq(connection: Connection, folder_id: int) -> int:
    """The folder's next modseq, taken."""
    return connection.execute(_TAKE_MODSEQ, {"folder_id": folder_id}).scalar_one()


def _take_uids(connection: Connection, folder_id: int, count: int) -> tuple[int, int]:
    """The first of the folder's next `count` UIDs and modseqs, all taken."""
    uid_next, modseq = connection.execute(
        _TAKE_UIDS_AND_MODSEQS, {"folder_id": folder_id, "count": count}
    ).one()
    return uid_next - count, modseq - count + 1


def _take_uid(connection: Connection, folder_id: int) -> tuple[int, int]:
    """The folder's next UID and next modseq, both taken."""
    return _take_uids(connection, folder_id, 1)


def _seen(connection: Connection, account_id: int, envelope_id: bytes) -> bool:
    params = {"account_id": account_id, "envelope_id": envelope_id}
    return connection.execute(_SELECT_SEEN, params).first() is not None


def _record_seen(connection: Connection, account_id: int, envelope_id: bytes, outcome: str) -> None:
    connection.execute(
        _INSERT_SEEN,
        {"account_id": account_id, "envelope_id": envelope_id, "outcome": outcome, "at": utc_now()},
    )


_NOTICE_KEY = (
    col(RejectionNotice.account_id) == bindparam("for_account"),
    col(RejectionNotice.fold_key) == bindparam("for_key"),
)
_SELECT_NOTICE = select(col(RejectionNotice.last_window)).where(*_NOTICE_KEY)
_INSERT_NOTICE = insert(RejectionNotice)
_UPDATE_NOTICE = (
    update(RejectionNotice).where(*_NOTICE_KEY).values(last_window=bindparam("window"))
)


def _take_notice(connection: Connection, account_id: int, fold_key: bytes, window: int) -> bool:
    """Claim the notice of `window` for (account, fold_key); False if it was given."""
    key = {"for_account": account_id, "for_key": fold_key}
    last = connection.execute(_SELECT_NOTICE, key).scalar_one_or_none()
    if last is None:
        row = {"account_id": account_id, "fold_key": fold_key, "last_window": window}
        connection.execute(_INSERT_NOTICE, row)
        return True
    if last >= window:
        return False
    connection.execute(_UPDATE_NOTICE, {**key, "window": window})
    return True


def log_expunged(connection: Connection, folder_id: int, uids: Sequence[int], modseq: int) -> None:
    """Record, in the expunging transaction, that these UIDs left the folder at `modseq`."""
    if uids:
        rows = [{"folder_id": folder_id, "uid": uid, "modseq": modseq} for uid in uids]
        connection.execute(_INSERT_EXPUNGED, rows)


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


def _metas(rows: Iterable[Row[int, str, datetime, int, int]]) -> tuple[MessageMeta, ...]:
    """MessageMeta of (uid, flags, internal date, size, modseq) rows."""
    parse_flags = _FlagCache()
    return tuple(
        MessageMeta(uid=uid, flags=parse_flags(flags), internal_date=date, size=size, modseq=seq)
        for uid, flags, date, size, seq in rows
    )


def _chunks(uids: Sequence[int]) -> Iterator[list[int]]:
    ordered = sorted(set(uids))
    for start in range(0, len(ordered), _IN_CHUNK):
        yield ordered[start : start + _IN_CHUNK]


# -- folder creation and delivery inside a caller's transaction (APPEND, imports) -------


@dataclass(frozen=True)
class PreparedMessage:
    """A message sealed for one account's store, not yet given a folder or UID."""

    seal_id: bytes
    size: int
    sealed: bytes
    sealed_header: bytes


def prepare_message(storage_key: bytes, account_id: int, message: bytes) -> PreparedMessage:
    """Seal `message` and its header block (outside any transaction: it is the slow part)."""
    seal_id = nacl.utils.random(SEAL_ID_LEN)
    return PreparedMessage(
        seal_id=seal_id,
        size=len(message),
        sealed=seal_message(storage_key, account_id, seal_id, message),
        sealed_header=seal_header(storage_key, account_id, seal_id, message),
    )


def ensure_folder(
    connection: Connection, account_id: int, name: str, special_use: str | None = None
) -> tuple[int, bool]:
    """The folder's id, creating it if missing; and whether it was created."""
    name = canonical_folder_name(name)
    if not name or len(name) > _MAX_FOLDER_NAME or any(ord(ch) < 0x20 for ch in name):
        raise InvalidValue("folder name is empty, too long or holds a control character")
    try:
        return _folder(connection, account_id, name, lock=True).id, False
    except MailboxNotFound:
        pass
    return insert_folder(connection, account_id, name, special_use), True


def store_prepared(
    connection: Connection,
    folder_id: int,
    prepared: PreparedMessage,
    *,
    internal_date: datetime,
    flags: Iterable[str] = (),
    envelope_id: bytes | None = None,
) -> int:
    """Insert a prepared message into a folder (whose row the caller locked); its UID."""
    (uid,) = store_prepared_many(
        connection, folder_id, [(prepared, internal_date, flags)], envelope_id=envelope_id
    )
    return uid


def store_prepared_many(
    connection: Connection,
    folder_id: int,
    messages: Sequence[tuple[PreparedMessage, datetime, Iterable[str]]],
    *,
    envelope_id: bytes | None = None,
) -> list[int]:
    """Insert prepared messages (each with its internal date and flags) into a folder
    whose row the caller locked, in two statements; their UIDs, in order."""
    first_uid, first_modseq = _take_uids(connection, folder_id, len(messages))
    connection.execute(
        _INSERT_MESSAGE,
        [
            {
                "folder_id": folder_id,
                "uid": first_uid + n,
                "envelope_id": envelope_id,
                "seal_id": prepared.seal_id,
                "internal_date": utc(internal_date),
                "size": prepared.size,
                "flags": _flags_text(canonical_flags(flags)),
                "modseq": first_modseq + n,
                "sealed": prepared.sealed,
                "sealed_header": prepared.sealed_header,
            }
            for n, (prepared, internal_date, flags) in enumerate(messages)
        ],
    )
    return [first_uid + n for n in range(len(messages))]


# -- errors toward IMAP ----------------------------------------------------------------

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


# -- the store -------------------------------------------------------------------------


# The largest message APPEND stores (the default of the gateway's `max_message_bytes`).
MAX_APPEND_BYTES = 50 * 1024 * 1024


class MailboxStore:
    def __init__(self, engine: Engine, *, max_message_bytes: int = MAX_APPEND_BYTES) -> None:
        self._engine = engine
        self._notifier = changes_notifier(engine)
        self._max_message_bytes = max_message_bytes

    def deliver(
        self,
        address: str,
        keys: AccountKeys,
        folder: str,
        message: bytes,
        *,
        internal_date: datetime,
        envelope_id: bytes | None = None,
        flags: frozenset[str] = frozenset(),
    ) -> int | None:
        """Seal and store a message; its new UID, or None if `envelope_id` was seen before.

        The message row and the envelope's "delivered" record commit together.
        Raises `UnknownAccount`, `KeyMismatch`, `MailboxNotFound`, `InvalidValue`.
        """
        with reading(self._engine) as connection:
            account_id = _account_id(connection, address, keys)
        prepared = prepare_message(keys.storage_key, account_id, message)
        try:
            with writing(self._engine) as connection:
                target = _folder(connection, account_id, folder, lock=True)
                if envelope_id is not None:
                    if _seen(connection, account_id, envelope_id):
                        return None
                    _record_seen(connection, account_id, envelope_id, DELIVERED)
                uid = store_prepared(
                    connection, target.id, prepared, internal_date=internal_date, flags=flags,
                    envelope_id=envelope_id,
                )
                header_cache.extend(connection, keys.storage_key, account_id, target.id)
            self._notifier.changed((account_id, target.name), target.highest_modseq + 1)
            return uid
        except IntegrityError:
            # PostgreSQL: a concurrent delivery of the same envelope committed first.
            if envelope_id is not None and self.seen_envelope(address, envelope_id):
                return None
            raise

    def create_folder(self, address: str, name: str, special_use: str | None = None) -> bool:
        """Create a folder (with its SPECIAL-USE attribute); False if it was there."""
        with writing(self._engine) as connection:
            account_id = _account_id(connection, address)
            return ensure_folder(connection, account_id, name, special_use)[1]

    def deliver_copies(
        self, folder: str, copies: Sequence[tuple[str, AccountKeys, bytes]], *,
        internal_date: datetime, flags: frozenset[str] = frozenset(),
    ) -> None:
        """Seal and store each (address, keys, message) in that account's `folder`, all in
        one transaction (one fsync for many Sent copies). Raises what `deliver` raises."""
        when = utc(internal_date)
        flags_text = _flags_text(canonical_flags(flags))
        rows = []
        with reading(self._engine) as connection:
            for address, keys, message in copies:
                account_id = _account_id(connection, address, keys)
                seal_id = nacl.utils.random(SEAL_ID_LEN)
                key = keys.storage_key
                rows.append((account_id, key, {
                    "envelope_id": None, "seal_id": seal_id, "internal_date": when,
                    "size": len(message), "flags": flags_text,
                    "sealed": seal_message(key, account_id, seal_id, message),
                    "sealed_header": seal_header(key, account_id, seal_id, message),
                }))
        taken: list[tuple[tuple[int, str], int]] = []
        with writing(self._engine) as connection:
            filled: dict[int, tuple[int, bytes]] = {}
            for account_id, key, row in rows:
                target = _folder(connection, account_id, folder, lock=True)
                uid, modseq = _take_uid(connection, target.id)
                connection.execute(
                    _INSERT_MESSAGE, {**row, "folder_id": target.id, "uid": uid, "modseq": modseq}
                )
                taken.append(((account_id, target.name), modseq))
                filled[target.id] = (account_id, key)
            for folder_id, (account_id, key) in filled.items():
                header_cache.extend(connection, key, account_id, folder_id)
        for folder_key, modseq in taken:
            self._notifier.changed(folder_key, modseq)

    def record_rejected(
        self, address: str, envelope_id: bytes, fold_key: bytes = b"", window: int | None = None
    ) -> bool:
        """Remember an envelope that was refused; True if the account is to get a notice.

        False if the envelope had been seen already, or if a notice for `fold_key` was
        given in this `window` (repeated refusals fold into one notice per window).
        Without a window, every new refusal gets its notice.
        """
        try:
            with writing(self._engine) as connection:
                account_id = _account_id(connection, address)
                if _seen(connection, account_id, envelope_id):
                    return False
                _record_seen(connection, account_id, envelope_id, REJECTED)
                return window is None or _take_notice(connection, account_id, fold_key, window)
        except IntegrityError:
            return False

    def seen_envelope(self, address: str, envelope_id: bytes) -> bool:
        with reading(self._engine) as connection:
            return _seen(connection, _account_id(connection, address), envelope_id)

    def session(self, address: str, keys: AccountKeys) -> MailSession:
        """A mail session for an unlocked account; `UnknownAccount` or `KeyMismatch` otherwise.
        The account's standard folders are created first if any is missing."""
        with reading(self._engine) as connection:
            account_id = _account_id(connection, address, keys)
        set_up_folders(self._engine, account_id)
        return StoreSession(
            self._engine, account_id, normalize_address(address), keys, self._notifier,
            max_message_bytes=self._max_message_bytes,
        )


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
        self._storage_key()
        with reading(self._engine) as connection:
            target = _folder(connection, self._account_id, folder)
            rows = connection.execute(_SELECT_META, {"folder_id": target.id}).all()
        return FolderSnapshot(
            name=target.name,
            uid_validity=target.uid_validity,
            uid_next=target.uid_next,
            highest_modseq=target.highest_modseq,
            messages=_metas(rows),
        )

    @_raises_backend_errors
    def changes_since(self, folder: str, modseq: int) -> FolderChanges:
        """Rows changed and UIDs expunged after `modseq`, up to the folder's highest modseq
        read first (a change committed meanwhile is left for the next call)."""
        self._storage_key()
        with reading(self._engine) as connection:
            target = _folder(connection, self._account_id, folder)
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

    async def wait_for_change(self, folder: str, modseq: int, timeout: float) -> bool:
        key = (self._account_id, canonical_folder_name(folder))
        return await self._notifier.wait(key, modseq, timeout)

    @_raises_backend_errors
    def fetch(self, folder: str, uids: Sequence[int]) -> Sequence[StoredMessage]:
        """Messages opened in memory, in UID order; missing or unopenable ones are skipped."""
        storage_key = self._storage_key()
        parse_flags = _FlagCache()
        result: list[StoredMessage] = []
        with reading(self._engine) as connection:
            target = _folder(connection, self._account_id, folder)
            for chunk in _chunks(uids):
                rows = connection.execute(_SELECT_SEALED, {"folder_id": target.id, "uids": chunk})
                for row_id, seal_id, sealed, uid, flags, date, size, modseq in rows:
                    body = open_message(storage_key, self._account_id, seal_id, size, sealed)
                    if body is None:
                        log.warning("stored message %s cannot be opened; skipped", row_id)
                        continue
                    meta = MessageMeta(
                        uid=uid, flags=parse_flags(flags), internal_date=date, size=size,
                        modseq=modseq,
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
            target = _folder(connection, self._account_id, folder)
            return header_cache.read_headers(
                connection, storage_key, self._account_id, target.id, uids
            )

    @_raises_backend_errors
    def store_flags(
        self, folder: str, uids: Sequence[int], flags: frozenset[str], mode: FlagMode
    ) -> Sequence[MessageMeta]:
        """Change flags; messages whose flags change share the folder's next modseq."""
        self._storage_key()
        given = canonical_flags(flags)
        parse_flags = _FlagCache()
        with writing(self._engine) as connection:
            target = _folder(connection, self._account_id, folder, lock=True)
            current: list[tuple[int, MessageMeta]] = []
            for chunk in _chunks(uids):
                rows = connection.execute(
                    _SELECT_FOR_STORE, {"folder_id": target.id, "uids": chunk}
                )
                current.extend(
                    (row_id, MessageMeta(uid, parse_flags(text), date, size, modseq))
                    for row_id, uid, text, date, size, modseq in rows
                    if row_id is not None
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
            modseq = _take_modseq(connection, target.id)
            connection.execute(
                _UPDATE_FLAGS,
                [
                    {"row_id": row_id, "new_flags": _flags_text(new), "new_modseq": modseq}
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
            target = _folder(connection, self._account_id, folder, lock=True)
            if uids is None:
                rows = connection.execute(_SELECT_FLAGS, {"folder_id": target.id}).all()
            else:
                rows = []
                for chunk in _chunks(uids):
                    params = {"folder_id": target.id, "uids": chunk}
                    rows.extend(connection.execute(_SELECT_FLAGS_OF, params))
            doomed = sorted(
                (uid, row_id) for row_id, uid, text in rows if _DELETED in text.split()
            )
            if not doomed:
                return []
            for start in range(0, len(doomed), _IN_CHUNK):
                ids = [row_id for _, row_id in doomed[start : start + _IN_CHUNK]]
                connection.execute(_DELETE_MESSAGES, {"ids": ids})
            modseq = _take_modseq(connection, target.id)
            log_expunged(connection, target.id, [uid for uid, _ in doomed], modseq)
        self._notifier.changed((self._account_id, target.name), modseq)
        return [uid for uid, _ in doomed]

    # -- writing mail and folders (`gateway.imap.backend.MailSession`) -------------
    # Each is a function of a module that builds on this one's queries, hence the imports
    # in the methods.

    @_raises_backend_errors
    def append(
        self,
        folder: str,
        message: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        from gateway.store import append

        result = append.append(
            self._engine, self._account_id, self._storage_key(), folder, message, flags,
            internal_date, limit=self._max_message_bytes,
        )
        self._signal(folder)
        return result

    @_raises_backend_errors
    def copy(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        from gateway.store import transfer

        key = self._storage_key()
        result = transfer.copy(self._engine, self._account_id, key, source, uids, destination)
        self._signal(destination)
        return result

    @_raises_backend_errors
    def move(self, source: str, uids: Sequence[int], destination: str) -> CopyResult:
        from gateway.store import transfer

        key = self._storage_key()
        result = transfer.move(self._engine, self._account_id, key, source, uids, destination)
        self._signal(source, destination)
        return result

    @_raises_backend_errors
    def create_folder(self, name: str) -> None:
        from gateway.store import folders

        self._write(folders.create, name)

    @_raises_backend_errors
    def delete_folder(self, name: str) -> None:
        from gateway.store import folders

        self._write(folders.delete_folder, name)

    @_raises_backend_errors
    def rename_folder(self, old: str, new: str) -> None:
        from gateway.store import folders

        self._write(folders.rename, old, new)
        if canonical_folder_name(old) == "INBOX":
            self._signal("INBOX")  # its messages moved out (RFC 3501 6.3.5)

    @_raises_backend_errors
    def subscribe(self, name: str) -> None:
        from gateway.store import folders

        self._write(folders.subscribe, name)

    @_raises_backend_errors
    def unsubscribe(self, name: str) -> None:
        from gateway.store import folders

        self._write(folders.unsubscribe, name)

    def _signal(self, *names: str) -> None:
        """Wake sessions waiting on these folders (after a commit that changed them)."""
        with reading(self._engine) as connection:
            for name in names:
                try:
                    target = _folder(connection, self._account_id, name)
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

    def close(self) -> None:
        """Forget the keys; every later call raises `SessionClosed`."""
        self._keys = None


class StoreAuthenticator:
    """IMAP LOGIN: unlock the account's keys, then open its mail session."""

    def __init__(self, keyring: KeyRing, mailboxes: MailboxStore) -> None:
        self._keyring = keyring
        self._mailboxes = mailboxes

    def login(self, username: str, password: str) -> MailSession:
        keys = self._keyring.unlock(username, password)
        try:
            return self._mailboxes.session(username, keys)
        except (UnknownAccount, KeyMismatch):
            raise AuthenticationFailed() from None
