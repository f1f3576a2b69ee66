"""OpenPGP keys at rest: each account's own key (private half sealed) and the public keys
of correspondents outside the bubble.

An account key row is written once (`put_account_key` keeps the first one written, so
two concurrent first logins agree on one key). A peer key replaces the one held for
its address. Nothing here opens a sealed key or parses one (`gateway.pgp` does).
Addresses are kept normalized. This module never logs.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Engine, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.store.accounts import find_account, normalize_address
from gateway.store.db import UnknownAccount, reading, utc_now, writing
from gateway.store.models import Account, OpenPgpAccountKey, OpenPgpPeerKey


class StoredKey(NamedTuple):
    fingerprint: str
    public: bytes
    sealed: bytes  # empty for a peer key (no private half)


_ACCOUNT_KEY = (
    select(
        col(OpenPgpAccountKey.fingerprint), col(OpenPgpAccountKey.public),
        col(OpenPgpAccountKey.sealed),
    )
    .join(Account, col(Account.id) == col(OpenPgpAccountKey.account_id))
    .where(col(Account.address) == bindparam("address"))
)
_PEER_KEY = select(col(OpenPgpPeerKey.fingerprint), col(OpenPgpPeerKey.public)).where(
    col(OpenPgpPeerKey.address) == bindparam("address")
)
_PEERS = select(
    col(OpenPgpPeerKey.address), col(OpenPgpPeerKey.fingerprint), col(OpenPgpPeerKey.public)
).order_by(col(OpenPgpPeerKey.address))
_DELETE_PEER = delete(OpenPgpPeerKey).where(col(OpenPgpPeerKey.address) == bindparam("address"))


class OpenPgpStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def account_key(self, address: str) -> StoredKey | None:
        with reading(self._engine) as connection:
            row = connection.execute(
                _ACCOUNT_KEY, {"address": normalize_address(address)}
            ).first()
        return None if row is None else StoredKey(row[0], row[1], row[2])

    def put_account_key(self, address: str, key: StoredKey) -> StoredKey:
        """Keep `key` as the account's unless it has one already; returns the one it has.

        Raises `UnknownAccount` if no account has that address."""
        address = normalize_address(address)
        try:
            with writing(self._engine) as connection:
                account = find_account(connection, address)
                if account is None:
                    raise UnknownAccount()
                connection.execute(insert(OpenPgpAccountKey), {
                    "account_id": account.id, "fingerprint": key.fingerprint,
                    "public": key.public, "sealed": key.sealed, "created_at": utc_now(),
                })
        except IntegrityError:
            pass  # written meanwhile: the first one stays
        held = self.account_key(address)
        if held is None:
            raise UnknownAccount()
        return held

    def peer_key(self, address: str) -> StoredKey | None:
        with reading(self._engine) as connection:
            row = connection.execute(_PEER_KEY, {"address": normalize_address(address)}).first()
        return None if row is None else StoredKey(row[0], row[1], b"")

    def peers(self) -> list[tuple[str, StoredKey]]:
        with reading(self._engine) as connection:
            return [(a, StoredKey(f, p, b"")) for a, f, p in connection.execute(_PEERS)]

    def put_peer_key(self, address: str, fingerprint: str, public: bytes) -> None:
        """Keep `public` as the key of `address`, replacing any key held for it."""
        address = normalize_address(address)
        with writing(self._engine) as connection:
            connection.execute(_DELETE_PEER, {"address": address})
            connection.execute(insert(OpenPgpPeerKey), {
                "address": address, "fingerprint": fingerprint, "public": public,
                "imported_at": utc_now(),
            })

    def remove_peer_key(self, address: str) -> bool:
        with writing(self._engine) as connection:
            gone = connection.execute(_DELETE_PEER, {"address": normalize_address(address)})
        return bool(gone.rowcount)
