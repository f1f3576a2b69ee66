"""The gateway's OpenPGP keys in use: accounts' own (opened while unlocked) and peers'.

`OpenPgpKeys.own` returns an unlocked account's private pgpy key, making it first when
the account has none (every account gets one: at `account add`, or at the first
unlock after enrolment or after an upgrade; `AccountKeyJob` makes them right after a
login, so `sealgate pgp export` has one to print). Opened keys are held in memory
only, like `gateway.keyring.KeyRing`'s. Thread-safe; never logs addresses or keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from bridge.keys import AccountKeys
from gateway.keyring import KeyRing
from gateway.pgp.keys import (
    PeerKey,
    SealedAccountKey,
    Validity,
    generate_account_key,
    open_account_key,
    read_public_key,
    seal_account_key,
)
from gateway.pgp.lib import pgpy
from gateway.store.openpgp import OpenPgpStore, StoredKey
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

_MAX_PEERS_CHECKED = 4096


class OpenPgpKeys:
    def __init__(self, store: OpenPgpStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._opened: dict[str, tuple[bytes, Any]] = {}  # address -> (seed, private key)
        self._validity: dict[bytes, Validity] = {}  # parsed once per peer key

    def own(self, address: str, keys: AccountKeys) -> Any:
        """The account's private key (pgpy), opened with its unlocked `keys`; made if none."""
        with self._lock:
            held = self._opened.get(address)
        if held is not None and held[0] == keys.seed:
            return held[1]
        stored = self._store.account_key(address)
        if stored is None:
            made = seal_account_key(generate_account_key(address), keys.seed)
            stored = self._store.put_account_key(
                address, StoredKey(made.fingerprint, made.public, made.sealed)
            )
            log.info("openpgp: an account got its OpenPGP key %s", made.fingerprint[-16:])
        key = open_account_key(SealedAccountKey(*stored), keys.seed)
        with self._lock:
            self._opened[address] = (keys.seed, key)
        return key

    def has_own(self, address: str) -> bool:
        return self._store.account_key(address) is not None

    def public(self, address: str) -> bytes | None:
        stored = self._store.account_key(address)
        return None if stored is None else stored.public

    def peer(self, address: str) -> PeerKey | None:
        """The key held for a correspondent (checked when imported: not parsed again here,
        so RCPT does no OpenPGP work)."""
        stored = self._store.peer_key(address)
        if stored is None:
            return None
        return PeerKey(stored.fingerprint, stored.public, ())

    def problem(self, peer: PeerKey) -> str | None:
        """Why `peer` cannot be encrypted to now (revoked, expired), or None. Each key is
        parsed once per process; its expiry is compared with the clock every time."""
        with self._lock:
            validity = self._validity.get(peer.public)
        if validity is None:
            validity = Validity.of(pgpy.PGPKey.from_blob(peer.public)[0])
            with self._lock:
                if len(self._validity) >= _MAX_PEERS_CHECKED:
                    self._validity.clear()
                self._validity[peer.public] = validity
        return validity.problem()

    def import_peer(self, address: str, data: bytes) -> PeerKey:
        """Keep the public key in `data` for `address`; `OpenPgpKeyError` if unusable."""
        peer = read_public_key(data)
        self._store.put_peer_key(address, peer.fingerprint, peer.public)
        return peer


class AccountKeyJob(PeriodicJob):
    """Gives each unlocked account without an OpenPGP key its key (woken at each login)."""

    def __init__(self, keys: OpenPgpKeys, keyring: KeyRing, interval: float) -> None:
        super().__init__(interval)
        self._keys = keys
        self._keyring = keyring
        self._done: set[str] = set()

    async def run_once(self) -> bool:
        for address, keys in self._keyring.unlocked().items():
            if address not in self._done:
                await asyncio.to_thread(self._keys.own, address, keys)
                self._done.add(address)
        return False
