"""An account's OpenPGP key at rest and on unlock (`gateway.store.openpgp`,
`gateway.pgp.keyring`), over the store backends: an account without one gets it at its
first unlock, the same one ever after, sealed; correspondents' keys replace each other."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import CannotOpen
from gateway.keyring import KeyRing
from gateway.pgp.keyring import AccountKeyJob, OpenPgpKeys
from gateway.pgp.keys import (
    OpenPgpKeyError,
    Validity,
    fingerprint_of,
    generate_account_key,
    read_public_key,
)
from gateway.pgp.outside import OutsidePolicy
from gateway.store.accounts import AccountStore
from gateway.store.db import UnknownAccount
from gateway.store.openpgp import OpenPgpStore, StoredKey
from tests.unit.store_support import ALICE, BOB, add_account

pytest_plugins = ["tests.unit.store_fixtures"]


def test_an_account_without_a_key_gets_one_at_its_first_unlock(store_engine) -> None:
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE, "pw-alice")  # as after a two-step enrolment
    openpgp = OpenPgpKeys(OpenPgpStore(store_engine))
    assert not openpgp.has_own(ALICE)
    ring = KeyRing(accounts)
    ring.unlock(ALICE, "pw-alice")

    async def one_pass() -> None:
        await AccountKeyJob(openpgp, ring, interval=60).run_once()

    asyncio.run(one_pass())
    stored = OpenPgpStore(store_engine).account_key(ALICE)
    assert stored is not None
    key = openpgp.own(ALICE, keys)
    assert fingerprint_of(key) == stored.fingerprint
    assert bytes(key) not in stored.sealed and bytes(key.pubkey) == stored.public
    # another process opens the same key (nothing cached), and only with the account's seed
    again = OpenPgpKeys(OpenPgpStore(store_engine)).own(ALICE, keys)
    assert fingerprint_of(again) == stored.fingerprint
    bob = add_account(accounts, BOB, "pw-bob")
    with pytest.raises(CannotOpen):
        OpenPgpKeys(OpenPgpStore(store_engine)).own(ALICE, bob)


def test_the_first_key_written_stays(store_engine) -> None:
    add_account(AccountStore(store_engine), ALICE, "pw-alice")
    store = OpenPgpStore(store_engine)
    first = StoredKey("A" * 40, b"first", b"sealed-1")
    assert store.put_account_key(ALICE, first) == first
    assert store.put_account_key(ALICE, StoredKey("B" * 40, b"second", b"sealed-2")) == first
    with pytest.raises(UnknownAccount):
        store.put_account_key("nobody@example.org", first)


def test_a_correspondent_key_replaces_the_one_held(store_engine) -> None:
    openpgp = OpenPgpKeys(OpenPgpStore(store_engine))
    old, new = (generate_account_key("carol@partner.example") for _ in range(2))
    openpgp.import_peer("Carol@Partner.example", str(old.pubkey).encode())
    openpgp.import_peer("carol@partner.example", bytes(new.pubkey))
    held = openpgp.peer("CAROL@partner.example")
    assert held is not None and held.fingerprint == fingerprint_of(new)
    assert OpenPgpStore(store_engine).remove_peer_key("carol@partner.example")
    assert openpgp.peer("carol@partner.example") is None


def expired_key(address: str) -> object:
    """A Curve25519 key made two days ago that expired after one."""
    from gateway.pgp.lib import EllipticCurveOID, HashAlgorithm, KeyFlags, PubKeyAlgorithm, pgpy

    made = datetime.now(UTC) - timedelta(days=2)
    key = pgpy.PGPKey.new(PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519, created=made)
    key.add_uid(pgpy.PGPUID.new(f"<{address}>"), usage={KeyFlags.Certify, KeyFlags.Sign},
                hashes=[HashAlgorithm.SHA256], key_expiration=timedelta(days=1), created=made)
    subkey = pgpy.PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519, created=made)
    key.add_subkey(subkey, usage={KeyFlags.EncryptCommunications}, created=made)
    return key


def test_an_expired_key_is_refused_at_import_and_at_rcpt(store_engine) -> None:
    key = expired_key("olga@partner.example")
    public = bytes(key.pubkey)  # type: ignore[attr-defined]
    with pytest.raises(OpenPgpKeyError, match="this key expired on"):
        read_public_key(public)
    # held from before it expired (written as an import once did)
    store = OpenPgpStore(store_engine)
    store.put_peer_key("olga@partner.example", fingerprint_of(key), public)
    policy = OutsidePolicy(OpenPgpKeys(store), smarthost=True)
    reply = policy.admit("olga@partner.example")
    assert isinstance(reply, str) and reply.startswith("550 5.7.1 the OpenPGP key")
    assert "olga@partner.example expired on" in reply and "sealgate pgp import" in reply


def test_validity_follows_the_clock() -> None:
    later = datetime(2030, 1, 1, tzinfo=UTC)
    validity = Validity(revoked=False, expires_at=later)
    assert validity.problem(later - timedelta(seconds=1)) is None
    assert validity.problem(later) == "expired on 2030-01-01"
    assert Validity(revoked=True, expires_at=None).problem() == "is revoked"
