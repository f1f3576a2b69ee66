from __future__ import annotations

import pytest

from bridge.keys import AccountKeys
from gateway.store.accounts import AccountStore
from gateway.store.db import AccountExists, InvalidValue, UnknownAccount
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE, BOB, RELAYS, add_account

pytest_plugins = ["tests.unit.store_fixtures"]


def test_add_then_get_returns_a_normalized_copy(store_engine):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, "  Alice@Example.ORG ")

    row = accounts.get("ALICE@example.org")
    assert row is not None
    assert row.address == ALICE
    assert row.public == keys.public
    assert row.mailbox_id == keys.public.mailbox_id
    assert row.relays == RELAYS
    assert row.created_at.tzinfo is not None
    assert accounts.get("nobody@example.org") is None


def test_duplicate_address_is_refused_whatever_its_case(store_engine):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE)
    with pytest.raises(AccountExists):
        add_account(accounts, "ALICE@EXAMPLE.ORG")
    assert [row.address for row in accounts.all()] == [ALICE]


def test_all_lists_accounts_in_creation_order(store_engine):
    accounts = AccountStore(store_engine)
    add_account(accounts, BOB)
    add_account(accounts, ALICE)
    assert [row.address for row in accounts.all()] == [BOB, ALICE]


def test_set_relays_replaces_the_list_in_order(store_engine):
    accounts = AccountStore(store_engine)
    add_account(accounts, ALICE)
    accounts.set_relays(ALICE, ["https://c.example", "https://a.example"])
    row = accounts.get(ALICE)
    assert row is not None
    assert row.relays == ("https://c.example", "https://a.example")
    with pytest.raises(UnknownAccount):
        accounts.set_relays(BOB, ["https://a.example"])


@pytest.mark.parametrize("address", ["alice", "a@b@c", "a b@example.org", "@example.org", ""])
def test_malformed_address_is_refused(store_engine, address):
    keys = AccountKeys.generate()
    with pytest.raises(InvalidValue):
        AccountStore(store_engine).add(address, b"sealed", keys.public, RELAYS)


@pytest.mark.parametrize(
    "relays", ["https://one.example", ["https://a.example", "https://a.example"], [""], [" x "]]
)
def test_malformed_relay_list_is_refused(store_engine, relays):
    accounts = AccountStore(store_engine)
    keys = AccountKeys.generate()
    with pytest.raises(InvalidValue):
        accounts.add(ALICE, b"sealed", keys.public, relays)
    add_account(accounts, ALICE)
    with pytest.raises(InvalidValue):
        accounts.set_relays(ALICE, relays)


def test_new_account_has_the_standard_folders_with_special_use(store_engine):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE)
    folders = MailboxStore(store_engine).session(ALICE, keys).list_folders()
    assert [(folder.name, folder.attributes) for folder in folders] == [
        ("INBOX", ("\\HasNoChildren",)),
        ("Sent", ("\\HasNoChildren", "\\Sent")),
        ("Drafts", ("\\HasNoChildren", "\\Drafts")),
        ("Trash", ("\\HasNoChildren", "\\Trash")),
        ("Junk", ("\\HasNoChildren", "\\Junk")),
        ("Archive", ("\\HasNoChildren", "\\Archive")),
    ]
