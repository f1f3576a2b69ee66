"""APPEND: a message a client uploads, sealed before anything is written.

The message is sealed (with its header block) under the account's storage key in
memory, outside the transaction, exactly as delivered mail is (`prepare_message`); the
transaction only inserts the sealed row, so nothing of it reaches the database, its
WAL or a temporary file in clear. Flags and keywords are kept (`\\Recent` is dropped:
it belongs to sessions), and so is the INTERNALDATE, with the zone it was given in. A message
over the store's size limit is refused before it is sealed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from gateway.imap.backend import (
    AppendResult,
    CannotDoThat,
    MailboxNotFound,
    MessageTooLarge,
    TryCreate,
)
from gateway.store import header_cache
from gateway.store.db import InvalidValue, utc, utc_now, writing
from gateway.store.flags import canonical_flags
from gateway.store.folder_rows import folder_row, prepare_message, store_prepared


def append(
    engine: Engine,
    account_id: int,
    storage_key: bytes,
    folder: str,
    message: bytes,
    flags: frozenset[str],
    internal_date: datetime | None,
    *,
    limit: int,
) -> AppendResult:
    """Seal and store `message` in `folder` (see `MailSession.append`)."""
    if len(message) > limit:
        raise MessageTooLarge(limit)
    if not message:
        raise CannotDoThat("an empty message cannot be stored")
    try:
        kept = canonical_flags(flags)
        when = internal_date if internal_date is not None else utc_now()
        utc(when)  # refuses a naive datetime
    except InvalidValue as error:
        raise CannotDoThat(str(error)) from None
    prepared = prepare_message(storage_key, account_id, message)
    with writing(engine) as connection:
        try:
            target = folder_row(connection, account_id, folder, lock=True)
        except MailboxNotFound:
            raise TryCreate(folder) from None
        uid = store_prepared(connection, target.id, prepared, internal_date=when, flags=kept)
        header_cache.extend(connection, storage_key, account_id, target.id)
    return AppendResult(uid_validity=target.uid_validity, uid=uid)
