"""CREATE, DELETE and RENAME of an account's folders (RFC 3501 6.3.3-6.3.5), SUBSCRIBE.

The hierarchy lives in the names ("/" separates levels): a folder row is a selectable
mailbox; a name that has inferiors but no row of its own (because it was never
created, or was deleted while it had inferiors) is one the IMAP layer lists as
`\\Noselect`. So DELETE of a folder with inferiors removes its row and messages and
leaves the name \\Noselect; CREATE of such a name makes it selectable; CREATE never
makes rows for superiors.

RENAME gives every folder it moves a new UIDVALIDITY (`folder_state.next_uid_validity`,
greater than the one the new name last had, as RFC 3501 2.3.1.1 wants) and keeps its
messages, UIDs and SPECIAL-USE attribute; inferiors and subscriptions move along.
RENAME of INBOX moves INBOX's messages into a new folder and leaves INBOX empty, with
its UIDNEXT (its UIDs are never handed out again) and its inferiors.

Each function runs inside the caller's write transaction (`StoreSession` opens it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update
from sqlmodel import col

from gateway.imap.backend import CannotDoThat, FolderExists, FolderHasChildren, MailboxNotFound
from gateway.store.db import InvalidValue
from gateway.store.folder_rows import folder_row, log_expunged, take_modseq
from gateway.store.folder_state import (
    INBOX,
    SEPARATOR,
    canonical_folder_name,
    checked_folder_name,
    insert_folder,
    is_inferior,
    next_uid_validity,
    remember_uid_validities,
    rename_subscriptions,
)
from gateway.store.folder_state import subscribe as _subscribe
from gateway.store.folder_state import unsubscribe as _unsubscribe
from gateway.store.models import Folder, HeaderCacheBlock, Message


@dataclass(frozen=True)
class _Row:
    id: int
    name: str
    special_use: str | None


def _rows(connection: Connection, account_id: int) -> list[_Row]:
    result = connection.execute(
        select(col(Folder.id), col(Folder.name), col(Folder.special_use))
        .where(col(Folder.account_id) == account_id)
        .order_by(col(Folder.id))
    )
    return [_Row(folder_id, name, use) for folder_id, name, use in result if folder_id is not None]


def _name(name: str) -> str:
    try:
        return checked_folder_name(name)
    except InvalidValue as error:
        raise CannotDoThat(str(error)) from None


def create(connection: Connection, account_id: int, name: str) -> None:
    """CREATE (see `MailSession.create_folder`)."""
    if name.endswith(SEPARATOR):  # "a/" declares that names will be created below "a"
        name = name[: -len(SEPARATOR)]
    name = _name(name)
    if name == INBOX or name in {row.name for row in _rows(connection, account_id)}:
        raise FolderExists()
    insert_folder(connection, account_id, name)


def delete_folder(connection: Connection, account_id: int, name: str) -> None:
    """DELETE (see `MailSession.delete_folder`)."""
    name = canonical_folder_name(name)
    if name == INBOX:
        raise CannotDoThat("INBOX cannot be deleted")
    rows = _rows(connection, account_id)
    row = next((row for row in rows if row.name == name), None)
    if row is None:
        if any(is_inferior(other.name, name) for other in rows):
            raise FolderHasChildren()
        raise MailboxNotFound(name)
    remember_uid_validities(connection, account_id)
    # Its messages and cached header blocks go with it (ON DELETE CASCADE).
    connection.execute(delete(Folder).where(col(Folder.id) == row.id))


def rename(connection: Connection, account_id: int, old: str, new: str) -> None:
    """RENAME (see `MailSession.rename_folder`)."""
    old = canonical_folder_name(old)
    new = _name(new)
    rows = _rows(connection, account_id)
    names = {row.name for row in rows}
    if new == INBOX or new in names or any(is_inferior(name, new) for name in names):
        raise FolderExists()
    if is_inferior(new, old):
        raise CannotDoThat("a mailbox cannot be renamed into one of its inferiors")
    remember_uid_validities(connection, account_id)
    if old == INBOX:
        _rename_inbox(connection, account_id, new)
        return
    moving = [row for row in rows if row.name == old or is_inferior(row.name, old)]
    if not moving:
        raise MailboxNotFound(old)
    for row in moving:
        connection.execute(
            update(Folder)
            .where(col(Folder.id) == row.id)
            .values(name=new + row.name[len(old):],
                    uid_validity=next_uid_validity(connection, account_id))
        )
    rename_subscriptions(connection, account_id, old, new)


def _rename_inbox(connection: Connection, account_id: int, new: str) -> None:
    inbox = folder_row(connection, account_id, INBOX, lock=True)
    folder_id = insert_folder(
        connection, account_id, new, uid_next=inbox.uid_next,
        highest_modseq=inbox.highest_modseq,
    )
    uids = list(connection.execute(
        select(col(Message.uid)).where(col(Message.folder_id) == inbox.id)
        .order_by(col(Message.uid))
    ).scalars())
    if not uids:
        return
    connection.execute(
        update(Message).where(col(Message.folder_id) == inbox.id).values(folder_id=folder_id)
    )
    connection.execute(  # the cached headers go with their messages
        update(HeaderCacheBlock).where(col(HeaderCacheBlock.folder_id) == inbox.id)
        .values(folder_id=folder_id)
    )
    log_expunged(connection, inbox.id, uids, take_modseq(connection, inbox.id))


def subscribe(connection: Connection, account_id: int, name: str) -> None:
    """SUBSCRIBE (see `MailSession.subscribe`)."""
    _subscribe(connection, account_id, [_name(name)])


def unsubscribe(connection: Connection, account_id: int, name: str) -> None:
    """UNSUBSCRIBE (see `MailSession.unsubscribe`)."""
    if not _unsubscribe(connection, account_id, canonical_folder_name(name)):
        raise CannotDoThat("that name is not subscribed")
