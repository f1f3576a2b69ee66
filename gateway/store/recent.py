"""\\Recent (RFC 3501 2.3.2) kept per folder as one number, the first recent UID
(`models.RecentMark`): a message is recent until a session selects its folder
read-write, and then for that session only. `claim` hands a session the UIDs from the
mark up to the folder's UID next and moves the mark there, in the caller's write
transaction (with the folder row locked, so two sessions never claim the same UID).

Runs inside the caller's transaction; never reads or writes a message.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlmodel import col

from gateway.store.models import RecentMark

_FOLDER = col(RecentMark.folder_id) == bindparam("of_folder")
_SELECT_MARK = select(col(RecentMark.first_recent_uid)).where(_FOLDER)
_UPDATE_MARK = update(RecentMark).where(_FOLDER).values(first_recent_uid=bindparam("uid"))
_INSERT_MARK = insert(RecentMark)


def first_recent_uid(connection: Connection, folder_id: int) -> int:
    mark = connection.execute(_SELECT_MARK, {"of_folder": folder_id}).scalar()
    return 1 if mark is None else int(mark)


def claim(connection: Connection, folder_id: int, uid_next: int) -> range:
    """The UIDs now recent for the claiming session; the mark moves to `uid_next`."""
    first = first_recent_uid(connection, folder_id)
    if first >= uid_next:
        return range(first, first)
    params = {"of_folder": folder_id, "uid": uid_next}
    if connection.execute(_UPDATE_MARK, params).rowcount == 0:
        connection.execute(_INSERT_MARK, {"folder_id": folder_id, "first_recent_uid": uid_next})
    return range(first, uid_next)
