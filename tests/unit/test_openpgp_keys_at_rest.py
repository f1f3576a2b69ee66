"""An account's OpenPGP key at rest and on unlock (`gateway.store.openpgp`,
`gateway.pgp.keyring`), over the store backends: an account without one gets it at its
first unlock, the same one ever after, sealed; correspondents' keys replace each other."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import CannotOpen
from gateway.keyring import KeyRing
from gateway.pgp.keyring import AccountKeyJob, OpenPgpKeys
from gateway.pgp.keys import fingerprint_of, generate_account_key
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
