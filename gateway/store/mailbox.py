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

The sessions of logged-in accounts (`StoreSession`, the `MailSession` of
`gateway.imap.backend`) live in `gateway.store.session`; the folder and message rows
every writer shares in `gateway.store.folder_rows`. This module holds delivery, envelope
dedup, refusal notices and LOGIN (`StoreAuthenticator`). It never logs or raises with
message content or addresses.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from bridge.keys import AccountKeys
from gateway.imap.backend import AuthenticationFailed, MailSession
from gateway.store import header_cache
from gateway.store.accounts import find_account, normalize_address
from gateway.store.db import KeyMismatch, UnknownAccount, reading, utc_now, writing
from gateway.store.folder_rows import ensure_folder, folder_row, prepare_message, store_prepared
from gateway.store.folder_state import set_up_folders
from gateway.store.models import RejectionNotice, SeenEnvelope
from gateway.store.session import MAX_APPEND_BYTES, StoreSession, changes_notifier

if TYPE_CHECKING:
    from gateway.keyring import KeyRing

DELIVERED = "delivered"
REJECTED = "rejected"

_SELECT_SEEN = select(col(SeenEnvelope.outcome)).where(
    col(SeenEnvelope.account_id) == bindparam("account_id"),
    col(SeenEnvelope.envelope_id) == bindparam("envelope_id"),
)
_INSERT_SEEN = insert(SeenEnvelope)


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
                target = folder_row(connection, account_id, folder, lock=True)
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
