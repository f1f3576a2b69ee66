"""The gateway store's tables (SQLModel), portable between SQLite and PostgreSQL.

Nothing here holds message content in clear. What is in clear, and why:
account addresses and public keys (the gateway routes by them), folder and subscribed names,
per-message metadata an IMAP server must answer without a key (UID, flags, size,
internal date, modseq), envelope ids (random, used to drop duplicates), relay URLs.
Everything else is sealed: the account seed under the user's passphrase, each
message under the account's storage key, each outbox envelope to its recipient,
each directory record under the bubble's directory key, each sent note (recipient and
subject of a sent envelope) under a key derived from the sender's storage key.

Modseq: every change of a message's flags or presence takes the folder's next
`highest_modseq` and stamps it on the changed messages, so CONDSTORE/QRESYNC can be
served from these columns. Expunged messages are deleted rows; each leaves its UID and
the modseq of its expunge in `expunged_message`, so that a session can learn what went
away after a modseq without reading the whole folder (and QRESYNC can answer VANISHED).

The tables have their own SQLModel registry (`StoreTable.metadata`), so creating
them never creates tables other modules declare. This module does no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Index,
    Integer,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col

# 64-bit ids on PostgreSQL; on SQLite "INTEGER PRIMARY KEY" (the rowid) is already 64-bit.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


def utc_offset_minutes(moment: datetime) -> int:
    """The UTC offset of an aware `moment`, in whole minutes east of UTC."""
    offset = moment.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


@lru_cache(maxsize=256)
def _zone(minutes: int) -> timezone:
    return UTC if minutes == 0 else timezone(timedelta(minutes=minutes))


def zoned(moment: datetime, minutes: int) -> datetime:
    """`moment` (aware, as read from a UTCDateTime column) shown in the zone `minutes`
    east of UTC."""
    return moment if minutes == 0 else moment.astimezone(_zone(minutes))


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as naive UTC (the same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetime must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)  # noqa: S101 - the column type guarantees it
        return value.replace(tzinfo=UTC)


class StoreTable(SQLModel, registry=registry()):
    """Base of the store's tables (own metadata)."""


class Account(StoreTable, table=True):
    __tablename__ = "account"

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(unique=True, max_length=320)  # normalized lower-case
    sealed_seed: bytes  # bridge.keys.seal_seed(seed, passphrase)
    encryption_key: bytes  # public X25519
    signing_key: bytes  # public Ed25519
    mailbox_key: bytes  # public Ed25519
    relays: str  # JSON list of URLs, priority order
    created_at: datetime = Field(sa_type=UTCDateTime)


class Folder(StoreTable, table=True):
    __tablename__ = "folder"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    name: str = Field(max_length=512)
    special_use: str | None = Field(default=None, max_length=32)  # "\\Sent", "\\Drafts", …
    uid_validity: int = Field(sa_type=BigInteger)  # set at creation, never changed
    uid_next: int = Field(sa_type=BigInteger)
    highest_modseq: int = Field(sa_type=BigInteger)


class Message(StoreTable, table=True):
    """One stored message. `sealed` = nonce(24) || XChaCha20-Poly1305(storage_key, message);
    `sealed_header` the same for the message's header block alone (own nonce), so FETCH
    items that read only headers open a few hundred octets instead of the whole message.

    The associated data binds the account id, `seal_id` (random, per message), the size
    and which part a blob holds, not the folder or UID, so a later MOVE/COPY moves the row
    without re-sealing.
    """

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid"),
        Index("ix_message_folder_modseq", "folder_id", "modseq"),  # changes since a modseq
    )

    id: int | None = Field(default=None, sa_type=_ROW_ID, primary_key=True)
    folder_id: int = Field(foreign_key="folder.id", ondelete="CASCADE")
    uid: int = Field(sa_type=BigInteger)
    envelope_id: bytes | None = None
    seal_id: bytes
    internal_date: datetime = Field(sa_type=UTCDateTime)
    # The zone the date was given in (minutes east of UTC): RFC 3501 keeps it for FETCH
    # INTERNALDATE and compares SEARCH BEFORE/ON/SINCE in it. Added after the table.
    internal_offset: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    size: int = Field(sa_type=BigInteger)  # octets of the plaintext message
    flags: str = ""  # space-separated
    modseq: int = Field(sa_type=BigInteger)
    # Before `sealed`: SQLite reads a row's columns in order, and a column stored after a
    # large blob is reached only by walking that blob's overflow pages.
    sealed_header: bytes
    sealed: bytes


class ExpungedMessage(StoreTable, table=True):
    """A message expunged from a folder: its UID and the modseq its expunge took. Holds no
    content; UIDs are never reused, so a row is never contradicted."""

    __tablename__ = "expunged_message"
    __table_args__ = (Index("ix_expunged_message_folder_modseq", "folder_id", "modseq"),)

    folder_id: int = Field(foreign_key="folder.id", primary_key=True, ondelete="CASCADE")
    uid: int = Field(sa_type=BigInteger, primary_key=True)
    modseq: int = Field(sa_type=BigInteger)


class RecentMark(StoreTable, table=True):
    """Where \\Recent starts in a folder (RFC 3501 2.3.2): the messages from
    `first_recent_uid` on arrived after the last session that selected the folder
    read-write took the recent ones (`gateway.store.recent`). No row: all are recent.
    A table of its own, so that stores made before it get it without a migration."""

    __tablename__ = "recent_mark"

    folder_id: int = Field(foreign_key="folder.id", primary_key=True, ondelete="CASCADE")
    first_recent_uid: int = Field(sa_type=BigInteger)


class MailboxState(StoreTable, table=True):
    """An account's folder bookkeeping. `last_uid_validity` is the greatest UIDVALIDITY
    it ever had, so a folder created again after a DELETE or RENAME gets a greater one
    (RFC 3501 2.3.1.1). The row is written when a session first sets up the account's
    standard folders and subscriptions (`gateway.store.folder_state`)."""

    __tablename__ = "mailbox_state"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    last_uid_validity: int = Field(sa_type=BigInteger)


class Subscription(StoreTable, table=True):
    """A folder name an account subscribed to (LSUB). It may name no folder: DELETE keeps
    it (RFC 3501 6.3.6); RENAME carries it to the new name."""

    __tablename__ = "subscription"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    name: str = Field(primary_key=True, max_length=512)


class HeaderCacheBlock(StoreTable, table=True):
    """The header blocks of a run of a folder's messages, sealed together under the
    account's storage key (`gateway.store.header_cache`): one decryption answers a header
    FETCH for up to a few hundred messages. A cache only: every message keeps its own
    `sealed_header`, and entries of messages expunged or moved away are skipped on read."""

    __tablename__ = "header_cache_block"
    __table_args__ = (UniqueConstraint("folder_id", "first_uid"),)

    id: int | None = Field(default=None, sa_type=_ROW_ID, primary_key=True)
    folder_id: int = Field(foreign_key="folder.id", ondelete="CASCADE")
    first_uid: int = Field(sa_type=BigInteger)
    last_uid: int = Field(sa_type=BigInteger)
    sealed: bytes


# What the header cache checks its entries against, read from the index alone (SQLite
# would otherwise visit each message's row, a page or more of blob, for three columns).
Index(
    "ix_message_header_key",
    col(Message.folder_id), col(Message.uid), col(Message.seal_id), col(Message.size),
)


class SeenEnvelope(StoreTable, table=True):
    """An envelope id already handled for an account, so a second copy is dropped."""

    __tablename__ = "seen_envelope"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    envelope_id: bytes = Field(primary_key=True)
    outcome: str = Field(max_length=16)  # "delivered" | "rejected"
    at: datetime = Field(sa_type=UTCDateTime)


class RejectionNotice(StoreTable, table=True):
    """The last notice window in which an account was told of refused envelopes of one kind.

    `fold_key` is empty for envelopes whose sender is unknown (per account), else a
    keyed hash of the claimed sender under the account's storage key (no address in
    clear). Rows are bounded by the directory: one per sender, plus one.
    """

    __tablename__ = "rejection_notice"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    fold_key: bytes = Field(primary_key=True)
    last_window: int = Field(sa_type=BigInteger)  # unix time // fold window, of the last notice


class OutboxItem(StoreTable, table=True):
    """A sealed envelope waiting for one relay to acknowledge it."""

    __tablename__ = "outbox_item"

    id: int | None = Field(default=None, sa_type=_ROW_ID, primary_key=True)
    envelope_id: bytes = Field(unique=True)
    envelope: bytes  # sealed, opaque
    relays: str  # JSON list of URLs, priority order
    attempts: int = 0
    next_attempt: datetime = Field(sa_type=UTCDateTime, index=True)
    last_error: str | None = Field(default=None, max_length=200)  # never content
    created_at: datetime = Field(sa_type=UTCDateTime)


class OutboxHold(StoreTable, table=True):
    """An outbox envelope of a submission still being queued: never due while held.

    A submission larger than one commit is written in parts; its envelopes are held
    until the last part commits, which deletes these rows in the same transaction.
    """

    __tablename__ = "outbox_hold"

    envelope_id: bytes = Field(
        foreign_key="outbox_item.envelope_id", primary_key=True, ondelete="CASCADE"
    )
    hold: bytes = Field(index=True)  # random token of one submission


class DirectoryRecordRow(StoreTable, table=True):
    """A replica of one signed directory record (sealed; no address in clear)."""

    __tablename__ = "directory_record"

    lookup_id: bytes = Field(primary_key=True)
    version: int = Field(sa_type=BigInteger)  # replaced only by a higher one
    sealed: bytes
    signature: bytes
    fetched_at: datetime = Field(sa_type=UTCDateTime)


class SentEnvelope(StoreTable, table=True):
    """An envelope an account sent, remembered until its relay says what became of it.

    Written with its outbox item; `relay` is set when a relay acknowledged the deposit.
    `note` holds the recipient's address and the subject, sealed under a key derived
    from the sender's storage key (`gateway.undelivered`), for the notice should the
    relay purge or expire it unfetched: neither is ever here in clear.
    """

    __tablename__ = "sent_envelope"

    envelope_id: bytes = Field(primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE", index=True)
    note: bytes  # nonce || XChaCha20-Poly1305(note key, JSON), the envelope id as AD
    relay: str | None = Field(default=None, max_length=2048)  # the relay that took it
    next_check: datetime = Field(sa_type=UTCDateTime, index=True)
    outcome: str | None = Field(default=None, max_length=16)  # "purged" | "expired"
    outcome_hour: int | None = Field(default=None, sa_type=BigInteger)  # unix hour, relay's
    created_at: datetime = Field(sa_type=UTCDateTime)


class MigrationKey(StoreTable, table=True):
    """The random key under which the migration tool digests an account's imported mail
    (`gateway.store.imports`): no digest at rest can be matched without it."""

    __tablename__ = "migration_key"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    key: bytes


class ImportedMessage(StoreTable, table=True):
    """One message the migration tool read: sealed to the account's public key while
    pending, filed into its folder by the gateway once the account is unlocked.

    `digest` is keyed (the account's `MigrationKey`), so equal messages dedup and the
    tool can verify without a key, while no plaintext hash of content is at rest.
    `sealed` is emptied when the message is filed; the row stays as its dedup record.
    """

    __tablename__ = "imported_message"
    __table_args__ = (UniqueConstraint("account_id", "folder", "digest"),)

    id: int | None = Field(default=None, sa_type=_ROW_ID, primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    folder: str = Field(max_length=512)  # the target folder in the bubble
    special_use: str | None = Field(default=None, max_length=32)
    digest: bytes
    flags: str = ""  # space-separated, keywords included
    internal_date: datetime = Field(sa_type=UTCDateTime)
    internal_offset: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # as above
    size: int = Field(sa_type=BigInteger)
    state: str = Field(max_length=8, index=True)  # "pending" | "filed" | "refused"
    sealed: bytes | None = None  # gateway.migrate.sealing; None once filed


class MigrationCheckpoint(StoreTable, table=True):
    """How far the migration of one source folder got: the last source UID done
    under that UIDVALIDITY. `source` is a keyed digest of the source's identity."""

    __tablename__ = "migration_checkpoint"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    source: bytes = Field(primary_key=True)
    folder: str = Field(primary_key=True, max_length=512)  # the folder's name at the source
    uid_validity: int = Field(sa_type=BigInteger)
    last_uid: int = Field(sa_type=BigInteger)


class OpenPgpAccountKey(StoreTable, table=True):
    """An account's own OpenPGP key (`gateway.pgp.keys`): the private half sealed under a
    key derived from the account's seed, so it opens only after the account is unlocked."""

    __tablename__ = "openpgp_account_key"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    fingerprint: str = Field(max_length=64)
    public: bytes  # transferable public key, binary
    sealed: bytes  # nonce || XChaCha20-Poly1305(derived key, private key)
    created_at: datetime = Field(sa_type=UTCDateTime)


class OpenPgpPeerKey(StoreTable, table=True):
    """The public OpenPGP key of a correspondent outside the bubble, imported by the operator
    (`sealgate pgp import`); outgoing mail to `address` is encrypted to it."""

    __tablename__ = "openpgp_peer_key"

    address: str = Field(primary_key=True, max_length=320)  # normalized lower-case
    fingerprint: str = Field(max_length=64)
    public: bytes  # transferable public key, binary
    imported_at: datetime = Field(sa_type=UTCDateTime)
