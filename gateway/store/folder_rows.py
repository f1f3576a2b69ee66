"""A folder's row and the message rows filed into it, inside a caller's transaction.

    folder_row                 the folder's row (locked for writers), or MailboxNotFound
    take_modseq, take_uid      the folder's counters, taken
    log_expunged               the record of UIDs that left a folder (`changes_since`)
    uid_chunks                 UIDs, ascending, in chunks for IN (...) lists
    prepare_message            sealing a message and its header block, before the
                               transaction (the slow part)
    ensure_folder, store_prepared   filing a prepared message

Delivery (`mailbox`), sessions (`session`), APPEND, COPY and MOVE (`transfer`), folders,
imports and the outbox's Sent copies build on these. Nothing here opens or commits a
transaction, and nothing logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import nacl.utils
from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlmodel import col

from gateway.imap.backend import MailboxNotFound
from gateway.store.db import InvalidValue, utc
from gateway.store.driver_sql import DriverSql, driver_blob, driver_datetime, insert_sql
from gateway.store.flags import canonical_flags, flags_text
from gateway.store.folder_state import canonical_folder_name, insert_folder
from gateway.store.models import ExpungedMessage, Folder, Message, utc_offset_minutes
from gateway.store.sealing import SEAL_ID_LEN, seal_header, seal_message

IN_CHUNK = 500  # bound parameters per IN (...) list
_MAX_FOLDER_NAME = 512

# Statements are built once: building one costs more than running it here.
_SELECT_FOLDER = select(
    col(Folder.id),
    col(Folder.name),
    col(Folder.uid_validity),
    col(Folder.uid_next),
    col(Folder.highest_modseq),
).where(col(Folder.account_id) == bindparam("account_id"), col(Folder.name) == bindparam("name"))
# Writers lock the folder row first (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes).
_LOCK_FOLDER = _SELECT_FOLDER.with_for_update()
_TAKE_MODSEQ = (
    update(Folder)
    .where(col(Folder.id) == bindparam("folder_id"))
    .values(highest_modseq=col(Folder.highest_modseq) + 1)
    .returning(col(Folder.highest_modseq))
)
# Every stored message goes through these: plain SQL (`gateway.store.driver_sql`).
_FOLDER_ID = "SELECT id FROM folder WHERE account_id = ? AND name = ?"
_LOCK_FOLDER_ID = {
    "sqlite": DriverSql(_FOLDER_ID),  # BEGIN IMMEDIATE holds the lock already
    "postgresql": DriverSql(_FOLDER_ID + " FOR UPDATE"),
}
_TAKE_UIDS = DriverSql(
    "UPDATE folder SET uid_next = uid_next + ?, highest_modseq = highest_modseq + ?"
    " WHERE id = ? RETURNING uid_next, highest_modseq"
)
_MESSAGE_COLUMNS = (
    "folder_id", "uid", "envelope_id", "seal_id", "internal_date", "internal_offset", "size",
    "flags", "modseq", "sealed_header",
)
_INSERT_MESSAGE = insert_sql("message", (*_MESSAGE_COLUMNS, "sealed"))
# SQLite copies a bound blob twice (the binding, then the row's record) before it writes a
# page of it, so a sealed message of 40 MB would cost 80 MB more for a moment. A large one
# goes in as zeroblob(n) instead, which takes no memory, and is written into its pages
# through the blob handle, a piece at a time.
_INSERT_ZEROED = insert(Message).values(sealed=func.zeroblob(bindparam("sealed_length")))
_INSERT_ZEROED_ID = _INSERT_ZEROED.returning(col(Message.id))
STREAMED_BLOB = 1 << 20  # octets of a sealed message from which SQLite gets it in pieces
_BLOB_PIECE = 1 << 18
_INSERT_EXPUNGED = insert(ExpungedMessage)


@dataclass(frozen=True)
class FolderRow:
    id: int
    name: str
    uid_validity: int
    uid_next: int
    highest_modseq: int


def folder_row(
    connection: Connection, account_id: int, name: str, *, lock: bool = False
) -> FolderRow:
    """The account's folder `name`; `MailboxNotFound` if it has none."""
    params = {"account_id": account_id, "name": canonical_folder_name(name)}
    row = connection.execute(_LOCK_FOLDER if lock else _SELECT_FOLDER, params).first()
    if row is None:
        raise MailboxNotFound(name)
    folder_id, folder_name, uid_validity, uid_next, highest_modseq = row
    assert folder_id is not None  # noqa: S101 - a primary key read back is never NULL
    return FolderRow(folder_id, folder_name, uid_validity, uid_next, highest_modseq)


def take_modseq(connection: Connection, folder_id: int) -> int:
    """The folder's next modseq, taken."""
    return connection.execute(_TAKE_MODSEQ, {"folder_id": folder_id}).scalar_one()


def take_uids(connection: Connection, folder_id: int, count: int) -> tuple[int, int]:
    """The first of the folder's next `count` UIDs and modseqs, all taken."""
    uid_next, modseq = _TAKE_UIDS.execute(connection, (count, count, folder_id)).one()
    return uid_next - count, modseq - count + 1


def take_uid(connection: Connection, folder_id: int) -> tuple[int, int]:
    """The folder's next UID and next modseq, both taken."""
    return take_uids(connection, folder_id, 1)


def log_expunged(connection: Connection, folder_id: int, uids: Sequence[int], modseq: int) -> None:
    """Record, in the transaction that takes them out, that these UIDs left the folder at
    `modseq` (EXPUNGE, MOVE and the RENAME of INBOX), for sessions that ask what changed
    since a modseq."""
    if uids:
        rows = [{"folder_id": folder_id, "uid": uid, "modseq": modseq} for uid in uids]
        connection.execute(_INSERT_EXPUNGED, rows)


def uid_chunks(uids: Sequence[int]) -> Iterator[list[int]]:
    """The distinct `uids`, ascending, in lists of at most `IN_CHUNK`."""
    ordered = sorted(set(uids))
    for start in range(0, len(ordered), IN_CHUNK):
        yield ordered[start : start + IN_CHUNK]


@dataclass(frozen=True)
class PreparedMessage:
    """A message sealed for one account's store, not yet given a folder or UID."""

    seal_id: bytes
    size: int
    sealed: bytearray  # as `sealing.seal` writes it: the drivers take it without a copy
    sealed_header: bytearray


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
    folder_id = _LOCK_FOLDER_ID[connection.dialect.name].execute(
        connection, (account_id, name)
    ).scalar()
    if folder_id is not None:
        return folder_id, False
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
    whose row the caller locked, in two statements (and on SQLite one more for each
    sealed blob of `STREAMED_BLOB` octets or more); their UIDs, in order."""
    first_uid, first_modseq = take_uids(connection, folder_id, len(messages))
    dialect = connection.dialect
    streams = dialect.name == "sqlite"
    blob = driver_blob(dialect)
    batch: list[tuple[object, ...]] = []
    texts: dict[frozenset[str], str] = {}  # the messages of a batch share their flags
    for n, (prepared, internal_date, flags) in enumerate(messages):
        when = utc(internal_date)
        fields = (folder_id, first_uid + n, envelope_id, prepared.seal_id)
        text = texts.get(flags) if type(flags) is frozenset else None
        if text is None:
            text = flags_text(canonical_flags(flags))
            if type(flags) is frozenset:
                texts[flags] = text
        rest = (
            utc_offset_minutes(internal_date), prepared.size, text, first_modseq + n,
            prepared.sealed_header,
        )
        if streams and len(prepared.sealed) >= STREAMED_BLOB:
            if batch:  # rows go in in UID order
                _INSERT_MESSAGE.execute(connection, batch)
                batch = []
            row: dict[str, object] = dict(
                zip(_MESSAGE_COLUMNS, (*fields, when, *rest), strict=True)
            )
            _insert_streamed(connection, row, prepared.sealed)
        else:
            batch.append((*fields, driver_datetime(dialect, when), *rest, blob(prepared.sealed)))
    if batch:
        _INSERT_MESSAGE.execute(connection, batch)
    return [first_uid + n for n in range(len(messages))]


def _insert_streamed(connection: Connection, row: dict[str, object], sealed: bytearray) -> None:
    """Insert a message row on SQLite with its sealed blob written in pieces."""
    params = {**row, "sealed_length": len(sealed)}
    row_id = connection.execute(_INSERT_ZEROED_ID, params).scalar_one()
    driver = connection.connection.driver_connection  # the sqlite3.Connection
    blob = driver.blobopen(Message.__tablename__, "sealed", row_id)  # type: ignore[union-attr]
    view = memoryview(sealed)
    with blob:
        for start in range(0, len(view), _BLOB_PIECE):
            blob.write(view[start : start + _BLOB_PIECE])
