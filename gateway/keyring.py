"""The key ring: the only place an account's unlocked keys live, in memory only.

`unlock` opens an account's sealed seed with its passphrase (Argon2id, slow on
purpose: call it in `gateway.login_gate.KdfPool`, never on an event loop nor in the
default executor that sealing and delivery share). An unknown address
costs the same Argon2id work as a wrong passphrase and raises the same
`AuthenticationFailed`, so neither the answer nor its timing tells which.

After a first unlock, the same passphrase for the same account is checked against
an in-memory verifier (keyed BLAKE2b under a random per-process key, compared in
constant time) instead of paying Argon2id again. A different passphrase always
goes back to Argon2id, so a changed passphrase takes effect at once; so does a key
rotation (the stored public keys no longer match the held ones).

Passphrases are used as their UTF-8 bytes, as `bridge.keys.seal_seed` got them.
Thread-safe. This module never writes anything and never logs addresses or secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
import threading
from dataclasses import dataclass

import nacl.utils

from bridge.errors import CannotOpen, WrongPassphrase
from bridge.keys import SEED_LEN, AccountKeys, KdfCost, seal_seed, unseal_seed
from gateway.imap.backend import AuthenticationFailed
from gateway.store.accounts import AccountStore, normalize_address

log = logging.getLogger(__name__)

_VERIFIER_PERSON = b"sg-login-verify"


@dataclass(frozen=True)
class _Unlocked:
    verifier: bytes
    keys: AccountKeys


class KeyRing:
    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts
        self._lock = threading.Lock()
        self._verifier_key = nacl.utils.random(32)
        self._unlocked: dict[str, _Unlocked] = {}
        self._decoy: bytes | None = None

    def unlock(self, address: str, password: str) -> AccountKeys:
        """The account's keys; `AuthenticationFailed` for an unknown address or wrong passphrase."""
        secret = password.encode("utf-8")
        try:
            normalized = normalize_address(address)
        except ValueError:
            self._spend_like_unseal(secret)
            raise AuthenticationFailed() from None
        verifier = self._verifier(normalized, secret)
        with self._lock:
            held = self._unlocked.get(normalized)
        account = self._accounts.get(normalized)
        if (
            held is not None
            and hmac.compare_digest(held.verifier, verifier)
            and account is not None
            and held.keys.public == account.public  # not rotated since
        ):
            return held.keys
        if account is None:
            self._spend_like_unseal(secret)
            raise AuthenticationFailed()
        try:
            keys = AccountKeys.unpack(unseal_seed(account.sealed_seed, secret))
        except (WrongPassphrase, CannotOpen, ValueError):
            raise AuthenticationFailed() from None
        if keys.public != account.public:
            log.warning("account %d: sealed seed does not match its public keys", account.id)
            raise AuthenticationFailed()
        with self._lock:
            held = self._unlocked.get(normalized)
            if held is not None and held.keys.pack() == keys.pack():
                keys = held.keys  # every caller shares one AccountKeys per account
            self._unlocked[normalized] = _Unlocked(verifier, keys)
        return keys

    def get(self, address: str) -> AccountKeys | None:
        try:
            normalized = normalize_address(address)
        except ValueError:
            return None
        with self._lock:
            held = self._unlocked.get(normalized)
        return None if held is None else held.keys

    def unlocked(self) -> dict[str, AccountKeys]:
        with self._lock:
            return {address: held.keys for address, held in self._unlocked.items()}

    def lock_all(self) -> None:
        with self._lock:
            self._unlocked.clear()

    def _verifier(self, address: str, secret: bytes) -> bytes:
        encoded = address.encode("utf-8")
        return hashlib.blake2b(
            struct.pack(">I", len(encoded)) + encoded + secret,
            key=self._verifier_key,
            person=_VERIFIER_PERSON,
            digest_size=32,
        ).digest()

    def _spend_like_unseal(self, secret: bytes) -> None:
        """Do the Argon2id work an unlock would, for an address that has no account.

        The decoy is a real account's sealed seed (the same cost parameters as real
        logins); whatever it yields is discarded.
        """
        try:
            unseal_seed(self._decoy_sealed_seed(), secret)
        except (WrongPassphrase, CannotOpen):
            pass

    def _decoy_sealed_seed(self) -> bytes:
        if self._decoy is None:
            accounts = self._accounts.all()
            if not accounts:
                # No account at all: there is nothing to hide; still answer no faster.
                return seal_seed(nacl.utils.random(SEED_LEN), b"decoy", KdfCost.minimum())
            self._decoy = accounts[0].sealed_seed
        return self._decoy
