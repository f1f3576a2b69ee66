"""Accounts: address, sealed key seed, public keys and home relays.

An account row holds nothing that opens mail: its seed is sealed under the user's
passphrase (`bridge.keys.seal_seed`) and only `gateway.keyring.KeyRing` unseals it,
in memory. Adding an account creates its standard folders (INBOX, Sent, Drafts,
Trash, Junk, Archive; `gateway.store.folder_state` keeps them there). Addresses are
kept normalized (trimmed, lower-case). This module never sees a passphrase and never
logs an address.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from bridge.directory import normalize_address as bubble_normalize_address
from bridge.keys import AccountPublic
from gateway.store.db import (
    AccountExists,
    InvalidValue,
    UnknownAccount,
    reading,
    relays_from_json,
    relays_to_json,
    utc_now,
    writing,
)
from gateway.store.models import Account, Folder

# (name, SPECIAL-USE attribute) of the folders every account has, in listing order.
STANDARD_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
MAX_ADDRESS_LEN = 254
_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")


def normalize_address(address: str) -> str:
    """The bubble's one address form (`bridge.directory.normalize_address`).

    Raises InvalidValue for a malformed address.
    """
    try:
        return bubble_normalize_address(address)
    except ValueError as e:
        raise InvalidValue(str(e)) from None


@dataclass(frozen=True)
class AccountRow:
    """A copy of an account row (not a live ORM object)."""

    id: int
    address: str
    sealed_seed: bytes = field(repr=False)
    public: AccountPublic
    relays: tuple[str, ...]
    created_at: datetime

    @property
    def mailbox_id(self) -> bytes:
        return self.public.mailbox_id


_ACCOUNT_COLUMNS = (
    col(Account.id),
    col(Account.address),
    col(Account.sealed_seed),
    col(Account.encryption_key),
    col(Account.signing_key),
    col(Account.mailbox_key),
    col(Account.relays),
    col(Account.created_at),
)


def _account_row(
    row: Row[int | None, str, bytes, bytes, bytes, bytes, str, datetime],
) -> AccountRow:
    account_id, address, sealed_seed, encryption, signing, mailbox, relays, created_at = row
    assert account_id is not None  # noqa: S101 - a primary key read back is never NULL
    return AccountRow(
        id=account_id,
        address=address,
        sealed_seed=sealed_seed,
        public=AccountPublic(encryption_key=encryption, signing_key=signing, mailbox_key=mailbox),
        relays=relays_from_json(relays),
        created_at=created_at,
    )


_SELECT_ACCOUNT = select(*_ACCOUNT_COLUMNS).where(col(Account.address) == bindparam("address"))


def find_account(connection: Connection, address: str) -> AccountRow | None:
    row = connection.execute(_SELECT_ACCOUNT, {"address": normalize_address(address)}).first()
    return None if row is None else _account_row(row)


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self, address: str, sealed_seed: bytes, public: AccountPublic, relays: Sequence[str]
    ) -> None:
        """Create the account and its standard folders; `AccountExists` if the address is taken."""
        normalized = normalize_address(address)
        if len(normalized) > MAX_ADDRESS_LEN or not _ADDRESS.fullmatch(normalized):
            raise InvalidValue("not an address of the form local@domain")
        relays_json = relays_to_json(relays)
        try:
            with writing(self._engine) as connection:
                if find_account(connection, normalized) is not None:
                    raise AccountExists()
                inserted = connection.execute(
                    insert(Account).values(
                        address=normalized,
                        sealed_seed=sealed_seed,
                        encryption_key=public.encryption_key,
                        signing_key=public.signing_key,
                        mailbox_key=public.mailbox_key,
                        relays=relays_json,
                        created_at=utc_now(),
                    )
                )
                (account_id,) = inserted.inserted_primary_key or (None,)
                uid_validity = int(time.time())
                connection.execute(
                    insert(Folder),
                    [
                        {
                            "account_id": account_id,
                            "name": name,
                            "special_use": special_use,
                            "uid_validity": uid_validity,
                            "uid_next": 1,
                            "highest_modseq": 1,
                        }
                        for name, special_use in STANDARD_FOLDERS
                    ],
                )
        except IntegrityError:
            # Another process added the same address between our check and insert.
            raise AccountExists() from None

    def get(self, address: str) -> AccountRow | None:
        with reading(self._engine) as connection:
            return find_account(connection, address)

    def all(self) -> list[AccountRow]:
        with reading(self._engine) as connection:
            rows = connection.execute(select(*_ACCOUNT_COLUMNS).order_by(col(Account.id)))
            return [_account_row(row) for row in rows]

    def set_keys(self, address: str, sealed_seed: bytes, public: AccountPublic) -> None:
        """Replace the sealed seeds and public keys after a rotation; `UnknownAccount` if absent.

        The mailbox key must not change: it names the mailbox on the relays.
        """
        with writing(self._engine) as connection:
            account = find_account(connection, address)
            if account is None:
                raise UnknownAccount()
            if account.public.mailbox_key != public.mailbox_key:
                raise InvalidValue("a rotation keeps the mailbox key")
            connection.execute(
                update(Account)
                .where(col(Account.id) == account.id)
                .values(
                    sealed_seed=sealed_seed,
                    encryption_key=public.encryption_key,
                    signing_key=public.signing_key,
                )
            )

    def set_relays(self, address: str, relays: Sequence[str]) -> None:
        """Replace the account's home relays (priority order); `UnknownAccount` if absent."""
        relays_json = relays_to_json(relays)
        with writing(self._engine) as connection:
            updated = connection.execute(
                update(Account)
                .where(col(Account.address) == normalize_address(address))
                .values(relays=relays_json)
            )
            if updated.rowcount != 1:
                raise UnknownAccount()
