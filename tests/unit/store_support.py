"""Accounts and constants shared by the store tests (tests/unit/test_store_*.py)."""

from __future__ import annotations

from bridge.keys import AccountKeys, KdfCost, seal_seed
from gateway.store.accounts import AccountStore

ALICE = "alice@example.org"
BOB = "bob@example.org"
RELAYS = ("https://relay-a.example", "https://relay-b.example")
PASSWORD = "correct horse"


def add_account(accounts: AccountStore, address: str, password: str = PASSWORD) -> AccountKeys:
    keys = AccountKeys.generate()
    sealed = seal_seed(keys.seed, password.encode(), KdfCost.minimum())
    accounts.add(address, sealed, keys.public, RELAYS)
    return keys
