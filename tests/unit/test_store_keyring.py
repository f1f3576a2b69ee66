from __future__ import annotations

import threading

import nacl.pwhash
import pytest

import gateway.keyring
from bridge.keys import AccountKeys, KdfCost, seal_seed, unseal_seed
from gateway.imap.backend import AuthenticationFailed
from gateway.keyring import KeyRing
from gateway.store.accounts import AccountStore
from gateway.store.db import InvalidValue, UnknownAccount
from tests.unit.store_support import ALICE, BOB, RELAYS, add_account

pytest_plugins = ["tests.unit.store_fixtures"]


@pytest.fixture
def argon2_calls(monkeypatch):
    """Counts the Argon2id unseals the key ring performs (the real function still runs)."""
    calls = []

    def counting_unseal(blob: bytes, passphrase: bytes) -> bytes:
        calls.append(passphrase)
        return unseal_seed(blob, passphrase)

    monkeypatch.setattr(gateway.keyring, "unseal_seed", counting_unseal)
    return calls


def test_unlock_gives_the_account_keys(store_engine):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)
    unlocked = ring.unlock("Alice@Example.org", "pw-alice")
    assert unlocked.seed == keys.seed
    assert ring.get(ALICE) is unlocked
    assert ring.unlocked() == {ALICE: unlocked}


def test_wrong_password_and_unknown_user_fail_alike_after_the_same_work(store_engine, argon2_calls):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)

    with pytest.raises(AuthenticationFailed) as wrong:
        ring.unlock(ALICE, "not-it")
    assert len(argon2_calls) == 1
    with pytest.raises(AuthenticationFailed) as unknown:
        ring.unlock(BOB, "not-it")
    assert len(argon2_calls) == 2
    assert str(wrong.value) == str(unknown.value)
    assert ring.unlocked() == {}


def test_malformed_login_fails_like_a_wrong_password(store_engine, argon2_calls):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)
    for login in ("no-at-sign", "a b@example.org", "", "x\x00@example.org"):
        with pytest.raises(AuthenticationFailed):
            ring.unlock(login, "pw-alice")
        assert ring.get(login) is None
    assert len(argon2_calls) == 4  # the same work as for a real account


def test_unknown_user_fails_when_no_account_exists(store_engine):
    with pytest.raises(AuthenticationFailed):
        KeyRing(AccountStore(store_engine)).unlock(ALICE, "anything")


def test_second_unlock_with_the_same_password_skips_argon2(store_engine, argon2_calls):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)

    first = ring.unlock(ALICE, "pw-alice")
    second = ring.unlock("ALICE@example.org", "pw-alice")
    assert second is first
    assert len(argon2_calls) == 1

    # A wrong password for an unlocked account pays Argon2id and changes nothing.
    with pytest.raises(AuthenticationFailed):
        ring.unlock(ALICE, "pw-alicE")
    assert len(argon2_calls) == 2
    assert ring.get(ALICE) is first
    assert ring.unlock(ALICE, "pw-alice") is first
    assert len(argon2_calls) == 2


def test_lock_all_forgets_every_key(store_engine, argon2_calls):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    add_account(accounts, BOB, "pw-bob")
    ring = KeyRing(accounts)
    ring.unlock(ALICE, "pw-alice")
    ring.unlock(BOB, "pw-bob")
    ring.lock_all()
    assert ring.unlocked() == {}
    assert ring.get(ALICE) is None
    ring.unlock(ALICE, "pw-alice")
    assert len(argon2_calls) == 3


def test_concurrent_unlocks_share_one_key_object(store_engine):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)
    results = []
    errors = []

    def login() -> None:
        try:
            results.append(ring.unlock(ALICE, "pw-alice"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=login) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 6
    assert all(keys is ring.get(ALICE) for keys in results)


def test_a_rotation_takes_effect_at_the_next_login(store_engine, argon2_calls):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE, "pw-alice")
    ring = KeyRing(accounts)
    assert ring.unlock(ALICE, "pw-alice").public == keys.public
    assert ring.unlock(ALICE, "pw-alice").public == keys.public
    assert len(argon2_calls) == 1  # the second login was answered from memory
    rotated = keys.rotated()
    accounts.set_keys(ALICE, seal_seed(rotated.pack(), b"pw-alice", KdfCost.minimum()),
                      rotated.public)
    unlocked = ring.unlock(ALICE, "pw-alice")
    assert len(argon2_calls) == 2
    assert unlocked.public == rotated.public and unlocked.generation == 1
    assert unlocked.history()[1].public == keys.public  # old mail still opens
    assert ring.get(ALICE) is unlocked


def test_set_keys_keeps_the_mailbox_key(store_engine):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE, "pw-alice")
    with pytest.raises(InvalidValue, match="mailbox key"):
        accounts.set_keys(ALICE, b"x", AccountKeys.generate().public)
    with pytest.raises(UnknownAccount):
        accounts.set_keys(BOB, b"x", AccountKeys.generate().public)


def test_an_unknown_address_pays_the_argon2id_cost_of_a_real_account(store_engine, monkeypatch):
    """Whatever cost accounts are sealed at, the decoy for an unknown address costs the same."""
    accounts = AccountStore(store_engine)
    keys = AccountKeys.generate()
    cost = KdfCost.interactive()  # neither the default nor the decoy-of-last-resort minimum
    accounts.add(ALICE, seal_seed(keys.seed, b"pw-alice", cost), keys.public, RELAYS)
    ring = KeyRing(accounts)
    costs = []
    real_kdf = nacl.pwhash.argon2id.kdf

    def recording_kdf(size, password, salt, *, opslimit, memlimit):
        costs.append((opslimit, memlimit))
        return real_kdf(size, password, salt, opslimit=opslimit, memlimit=memlimit)

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", recording_kdf)
    for login in (ALICE, BOB, "not an address"):
        with pytest.raises(AuthenticationFailed):
            ring.unlock(login, "wrong password")
    assert costs == [(cost.opslimit, cost.memlimit)] * 3
