"""COPY and MOVE between an account's folders (RFC 3501 6.4.7, RFC 6851, UIDPLUS).

Neither opens a message: a sealed message is bound to its account, its `seal_id` and
its size, not to its folder or UID (`gateway.store.mailbox`), so COPY inserts a copy of
the row (`INSERT ... SELECT`, the blobs never leave the database) and MOVE changes the
row's folder and UID in place. The destination's UIDs are taken as one range; every
copied or moved message gets the destination's next modseq, and a MOVE takes the
source's next modseq for its expunge, which it records with `log_expunged` in the
same transaction. Both folders are locked in the order of their ids, so two MOVEs in
opposite directions cannot deadlock (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Connection, Engine, bindparam, insert, select, update
from sqlmodel import col

from gateway.imap.backend import CannotDoThat, CopyResult, MailboxNotFound, TryCreate
from gateway.store import header_cache
from gateway.store.db import writing
from gateway.store.folder_rows import (
    FolderRow,
    folder_row,
    log_expunged,
    take_modseq,
    uid_chunks,
)
from gateway.store.folder_state import canonical_folder_name
from gateway.store.models import Folder, Message

_M = Message
_SELECT_ROWS = (
    select(col(_M.id), col(_M.uid))
    .where(col(_M.folder_id) == bindparam("folder_id"),
           col(_M.uid).in_(bindparam("uids", expanding=True)))
    .order_by(col(_M.uid))
)
_TAKE_UIDS = (
    update(Folder)
    .where(col(Folder.id) == bindparam("folder_id"))
    .values(uid_next=col(Folder.uid_next) + bindparam("count", type_=BigInteger),
            highest_modseq=col(Folder.highest_modseq) + 1)
    .returning(col(Folder.uid_next), col(Folder.highest_modseq))
)
_KEPT_NAMES = ("envelope_id", "seal_id", "internal_date", "internal_offset", "size", "flags",
               "sealed_header", "sealed")
_KEPT = tuple(Message.__table__.c[name] for name in _KEPT_NAMES)  # type: ignore[attr-defined]
_COPY_ROW = insert(Message).from_select(
    ["folder_id", "uid", "modseq", *_KEPT_NAMES],
    select(
        bindparam("to_folder", type_=BigInteger),
        bindparam("to_uid", type_=BigInteger),
        bindparam("to_modseq", type_=BigInteger),
        *_KEPT,
    ).where(col(_M.id) == bindparam("row_id")),
)
_MOVE_ROW = (
    update(Message)
    .where(col(_M.id) == bindparam("row_id"))
    .values(folder_id=bindparam("to_folder"), uid=bindparam("to_uid"),
            modseq=bindparam("to_modseq"))
)


def _locked_pair(
    connection: Connection, account_id: int, source: str, destination: str
) -> tuple[FolderRow, FolderRow]:
    """Both folders, locked in id order; TryCreate if the destination is missing."""
    first = folder_row(connection, account_id, source)
    try:
        second = folder_row(connection, account_id, destination)
    except MailboxNotFound:
        raise TryCreate(destination) from None
    names = {first.id: source, second.id: destination}
    # Read again under the lock: UIDNEXT may have moved since the first read.
    locked = {
        key: folder_row(connection, account_id, names[key], lock=True) for key in sorted(names)
    }
    return locked[first.id], locked[second.id]


def _existing(connection: Connection, folder_id: int, uids: Sequence[int]) -> list[tuple[int, int]]:
    """(row id, UID) of the messages among `uids` that exist, ascending UID."""
    rows: list[tuple[int, int]] = []
    for chunk in uid_chunks(uids):
        params = {"folder_id": folder_id, "uids": chunk}
        rows.extend((row_id, uid) for row_id, uid in connection.execute(_SELECT_ROWS, params)
                    if row_id is not None)
    return rows


def _transfer(
    engine: Engine, account_id: int, storage_key: bytes, source: str, uids: Sequence[int],
    destination: str, *, move: bool,
) -> CopyResult:
    with writing(engine) as connection:
        origin, target = _locked_pair(connection, account_id, source, destination)
        rows = _existing(connection, origin.id, uids)
        if not rows:
            return CopyResult(uid_validity=target.uid_validity, uids=())
        params = {"folder_id": target.id, "count": len(rows)}
        uid_next, modseq = connection.execute(_TAKE_UIDS, params).one()
        first = uid_next - len(rows)
        pairs = tuple((uid, first + n) for n, (_, uid) in enumerate(rows))
        connection.execute(
            _MOVE_ROW if move else _COPY_ROW,
            [
                {"row_id": row_id, "to_folder": target.id, "to_uid": new_uid,
                 "to_modseq": modseq}
                for (row_id, _), (_, new_uid) in zip(rows, pairs, strict=True)
            ],
        )
        if move:
            expunged = take_modseq(connection, origin.id)
            log_expunged(connection, origin.id, [uid for _, uid in rows], expunged)
        header_cache.extend(connection, storage_key, account_id, target.id)
    return CopyResult(uid_validity=target.uid_validity, uids=pairs)


def copy(
    engine: Engine, account_id: int, storage_key: bytes, source: str, uids: Sequence[int],
    destination: str,
) -> CopyResult:
    """COPY (see `MailSession.copy`)."""
    return _transfer(engine, account_id, storage_key, source, uids, destination, move=False)


def move(
    engine: Engine, account_id: int, storage_key: bytes, source: str, uids: Sequence[int],
    destination: str,
) -> CopyResult:
    """MOVE (see `MailSession.move`)."""
    if canonical_folder_name(source) == canonical_folder_name(destination):
        raise CannotDoThat("a message cannot be moved into the folder it is in")
    return _transfer(engine, account_id, storage_key, source, uids, destination, move=True)
