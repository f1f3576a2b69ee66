"""An account's folder bookkeeping: names, UIDVALIDITY, the standard folders, subscriptions.

- Names: `checked_folder_name` is the one rule for a name the store keeps ("/" separates
  levels, no empty level, no control character, no LIST wildcard); INBOX is
  case-insensitive (RFC 3501 5.1).
- UIDVALIDITY: every new folder takes `next_uid_validity`, greater than any the account
  had (the `mailbox_state` row remembers the greatest, deleted folders' included), so a
  name created again never shows an old UIDVALIDITY with new UIDs (RFC 3501 2.3.1.1).
- Standard folders: INBOX, Sent, Drafts, Trash, Junk and Archive (with their SPECIAL-USE
  attributes, RFC 6154). `set_up_folders` runs when a session opens: a standard folder
  that is missing (none has its attribute) is created and subscribed, as Dovecot does
  with `auto = subscribe`. The first time it runs for an account it also subscribes
  every folder there is (before subscriptions were kept, LSUB listed every folder).
- Subscriptions: names only, kept when their folder goes.

Every function but `set_up_folders` runs inside the caller's transaction. This module
never reads or writes a message.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlmodel import col

from gateway.store.accounts import STANDARD_FOLDERS
from gateway.store.db import InvalidValue, reading, writing
from gateway.store.models import Account, Folder, MailboxState, Subscription

INBOX = "INBOX"
SEPARATOR = "/"
MAX_FOLDER_NAME = 512
_WILDCARDS = frozenset("*%")

_ACCOUNT: BindParameter[int] = bindparam("for_account")
_SELECT_LAST = select(col(MailboxState.last_uid_validity)).where(
    col(MailboxState.account_id) == _ACCOUNT
)
_MAX_VALIDITY = select(func.max(col(Folder.uid_validity))).where(col(Folder.account_id) == _ACCOUNT)
_LAST = col(MailboxState.last_uid_validity)
# Greater than the last, and the clock if it is ahead; taken in one statement, so two
# transactions never take the same value.
_TAKE_NEXT = (
    update(MailboxState)
    .where(col(MailboxState.account_id) == _ACCOUNT)
    .values(last_uid_validity=case((_LAST + 1 > bindparam("now"), _LAST + 1),
                                   else_=bindparam("now")))
    .returning(_LAST)
)
# Writers that set up an account's bookkeeping or subscriptions take its row first
# (PostgreSQL; on SQLite BEGIN IMMEDIATE already serializes them).
_LOCK_ACCOUNT = select(col(Account.id)).where(col(Account.id) == _ACCOUNT).with_for_update()
_SELECT_FOLDER_NAMES = select(col(Folder.name), col(Folder.special_use)).where(
    col(Folder.account_id) == _ACCOUNT
)
_SELECT_SUBSCRIBED = (
    select(col(Subscription.name))
    .where(col(Subscription.account_id) == _ACCOUNT)
    .order_by(col(Subscription.name))
)
_SUBSCRIPTION = (
    col(Subscription.account_id) == _ACCOUNT,
    col(Subscription.name) == bindparam("name"),
)


def canonical_folder_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); other names are kept as given."""
    return INBOX if name.upper() == INBOX else name


def checked_folder_name(name: str) -> str:
    """The name in canonical form; `InvalidValue` if the store cannot keep it."""
    name = canonical_folder_name(name)
    if (
        len(name) > MAX_FOLDER_NAME
        or any(not level for level in name.split(SEPARATOR))
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch in _WILDCARDS for ch in name)
    ):
        raise InvalidValue(
            "folder name is empty, too long, has an empty level or holds a control "
            "character or a wildcard"
        )
    return name


def is_inferior(name: str, of: str) -> bool:
    """Whether `name` is below `of` in the hierarchy ("a/b" and "a/b/c" are below "a")."""
    return name.startswith(of + SEPARATOR)


# -- UIDVALIDITY ---------------------------------------------------------------------------


def _last_uid_validity(connection: Connection, account_id: int) -> int:
    """The greatest UIDVALIDITY the account had; made on first use (see the docstring)."""
    params = {"for_account": account_id}
    last = connection.execute(_SELECT_LAST, params).scalar_one_or_none()
    if last is not None:
        return last
    connection.execute(_LOCK_ACCOUNT, params)
    last = connection.execute(_SELECT_LAST, params).scalar_one_or_none()
    if last is not None:  # another transaction made it while this one waited
        return last
    last = connection.execute(_MAX_VALIDITY, params).scalar_one_or_none()
    subscribe(connection, account_id, [name for name, _ in connection.execute(
        _SELECT_FOLDER_NAMES, params)])
    connection.execute(
        insert(MailboxState), {"account_id": account_id, "last_uid_validity": last or 0}
    )
    return last or 0


def next_uid_validity(connection: Connection, account_id: int) -> int:
    """A UIDVALIDITY greater than every one the account had, taken (a write transaction)."""
    _last_uid_validity(connection, account_id)
    params = {"for_account": account_id, "now": int(time.time())}
    return int(connection.execute(_TAKE_NEXT, params).scalar_one())


def insert_folder(
    connection: Connection, account_id: int, name: str, special_use: str | None = None,
    *, uid_next: int = 1, highest_modseq: int = 1,
) -> int:
    """A new folder row (the caller checked that the name is free); its id."""
    inserted = connection.execute(
        insert(Folder),
        {
            "account_id": account_id,
            "name": name,
            "special_use": special_use,
            "uid_validity": next_uid_validity(connection, account_id),
            "uid_next": uid_next,
            "highest_modseq": highest_modseq,
        },
    )
    (folder_id,) = inserted.inserted_primary_key or (None,)
    assert folder_id is not None  # noqa: S101 - an insert always yields its key
    return int(folder_id)


def remember_uid_validities(connection: Connection, account_id: int) -> None:
    """Before folder rows are deleted or renamed: their UIDVALIDITY is on record (every
    value handed out after the record was made came from it)."""
    _last_uid_validity(connection, account_id)


# -- standard folders ------------------------------------------------------------------------


def _missing_standard(rows: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    names = set()
    uses = set()
    for name, special_use in rows:
        names.add(name)
        uses.add(special_use)
    return [
        (name, use)
        for name, use in STANDARD_FOLDERS
        if (use is None and name not in names) or (use is not None and use not in uses)
    ]


def set_up_folders(engine: Engine, account_id: int) -> None:
    """Create the standard folders the account lacks, subscribed (see the docstring).
    Reads only, unless something is missing."""
    params = {"for_account": account_id}
    with reading(engine) as connection:
        state = connection.execute(_SELECT_LAST, params).first()
        missing = _missing_standard(connection.execute(_SELECT_FOLDER_NAMES, params).all())
    if state is not None and not missing:
        return
    with writing(engine) as connection:
        connection.execute(_LOCK_ACCOUNT, params)
        _last_uid_validity(connection, account_id)
        rows = connection.execute(_SELECT_FOLDER_NAMES, params).all()
        taken = {name: special_use for name, special_use in rows}
        for name, special_use in _missing_standard(rows):
            if name in taken:  # a folder of that name, without the attribute: give it
                connection.execute(
                    update(Folder)
                    .where(col(Folder.account_id) == account_id, col(Folder.name) == name)
                    .values(special_use=special_use)
                )
            else:
                insert_folder(connection, account_id, name, special_use)
            subscribe(connection, account_id, [name])


# -- subscriptions -----------------------------------------------------------------------------


def subscribe(connection: Connection, account_id: int, names: Sequence[str]) -> None:
    """Subscribe these names (already subscribed ones stay as they are)."""
    connection.execute(_LOCK_ACCOUNT, {"for_account": account_id})
    present = set(subscribed(connection, account_id))
    rows = [{"account_id": account_id, "name": name} for name in dict.fromkeys(names)
            if name not in present]
    if rows:
        connection.execute(insert(Subscription), rows)


def unsubscribe(connection: Connection, account_id: int, name: str) -> bool:
    """False if the name was not subscribed."""
    gone = connection.execute(
        delete(Subscription).where(*_SUBSCRIPTION), {"for_account": account_id, "name": name}
    )
    return bool(gone.rowcount)


def subscribed(connection: Connection, account_id: int) -> list[str]:
    return list(connection.execute(_SELECT_SUBSCRIBED, {"for_account": account_id}).scalars())


def rename_subscriptions(connection: Connection, account_id: int, old: str, new: str) -> None:
    """Carry the subscriptions of `old` and of the names below it to `new`."""
    moved = [name for name in subscribed(connection, account_id)
             if name == old or is_inferior(name, old)]
    for name in moved:
        unsubscribe(connection, account_id, name)
    subscribe(connection, account_id, [new + name[len(old):] for name in moved])
