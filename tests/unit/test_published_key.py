"""Published OpenPGP keys: root-signed, sealed, bound to one address; found by kind."""

from __future__ import annotations

import dataclasses

import nacl.utils
import pytest

from bridge.directory import DirectoryEntry, lookup_id, make_record
from bridge.drain import DrainStatement
from bridge.errors import DirectoryError
from bridge.keys import AccountKeys, RootKey
from bridge.published_key import MAX_PUBLISHED_KEY, PublishedKey, published_key_lookup_id
from gateway.pgp.directory import published_keys
from gateway.pgp.keys import (
    OpenPgpKeyError,
    fingerprint_of,
    generate_account_key,
    read_public_key,
)

CAROL = "carol@partner.example"
KEY = b"\x99\x00\x33" + b"public key packets" * 40
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.fixture
def keys() -> tuple[RootKey, bytes]:
    return RootKey.generate(), nacl.utils.random(32)


def test_a_statement_round_trips_and_hides_the_address_and_key(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    record = PublishedKey("Carol@Partner.example", FPR, KEY, 5).to_record(root, directory_key)
    assert record.lookup_id == published_key_lookup_id(directory_key, CAROL)
    assert record.lookup_id != lookup_id(directory_key, CAROL)  # not the address record's
    assert CAROL.encode() not in record.sealed and b"public key packets" not in record.sealed
    record.verify_publisher((root.public,))  # a relay accepts it like any record
    want = PublishedKey(CAROL, FPR, KEY, 5)
    assert PublishedKey.from_record(record, CAROL, directory_key, (root.public,)) == want
    assert PublishedKey.open_any(record, directory_key, (root.public,)) == want
    withdrawn = PublishedKey(CAROL, None, None, 6).to_record(root, directory_key)
    assert PublishedKey.open_any(withdrawn, directory_key, (root.public,)) == PublishedKey(
        CAROL, None, None, 6)


def test_it_opens_only_for_its_address_root_and_directory_key(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    record = PublishedKey(CAROL, FPR, KEY, 1).to_record(root, directory_key)
    with pytest.raises(DirectoryError):
        PublishedKey.from_record(record, "dave@partner.example", directory_key, (root.public,))
    with pytest.raises(DirectoryError):
        PublishedKey.from_record(record, CAROL, directory_key, (RootKey.generate().public,))
    with pytest.raises(DirectoryError):
        PublishedKey.from_record(record, CAROL, nacl.utils.random(32), (root.public,))
    assert PublishedKey.open_any(record, nacl.utils.random(32), (root.public,)) is None


def test_a_changed_byte_a_changed_version_or_another_root_is_refused(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    record = PublishedKey(CAROL, FPR, KEY, 3).to_record(root, directory_key)
    sealed = bytearray(record.sealed)
    sealed[-1] ^= 1
    with pytest.raises(DirectoryError):
        PublishedKey.from_record(dataclasses.replace(record, sealed=bytes(sealed)), CAROL,
                                 directory_key, (root.public,))
    # The root signed version 3: the body still opens, the signature does not verify.
    for bad in (
        dataclasses.replace(record, version=4),
        dataclasses.replace(record, signature=bytes(64)),
        # Whoever holds the directory key (any gateway) but not the root key.
        PublishedKey(CAROL, FPR, b"mallory's key", 9).to_record(RootKey.generate(), directory_key),
    ):
        with pytest.raises(DirectoryError):
            PublishedKey.open_any(bad, directory_key, (root.public,))


def test_a_statement_filed_under_another_address_is_refused(
    keys: tuple[RootKey, bytes]
) -> None:
    """A statement for carol cannot be passed off under dave's lookup id: the id is the
    seal's associated data (the record does not even open) and the root signed it."""
    root, directory_key = keys
    dave = "dave@x.example"
    moved = dataclasses.replace(PublishedKey(CAROL, FPR, KEY, 2).to_record(root, directory_key),
                                lookup_id=published_key_lookup_id(directory_key, dave))
    assert PublishedKey.open_any(moved, directory_key, (root.public,)) is None
    with pytest.raises(DirectoryError):
        PublishedKey.from_record(moved, dave, directory_key, (root.public,))


def test_published_keys_pick_key_statements_out_of_a_whole_replica(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    carol = generate_account_key(CAROL).pubkey
    real = bytes(carol)
    entry = DirectoryEntry("bob@test.bubble", AccountKeys.generate().public, ("https://relay",),
                           issued_at=1)
    records = [
        make_record(entry, root, directory_key),
        DrainStatement("https://relay", True, 1).to_record(root, directory_key),
        PublishedKey(CAROL, fingerprint_of(carol), real, 1).to_record(root, directory_key),
        PublishedKey("dave@partner.example", None, None, 2).to_record(root, directory_key),
        PublishedKey("eve@evil.example", FPR, real, 1).to_record(RootKey.generate(),
                                                                 directory_key),
        PublishedKey("gil@partner.example", FPR, KEY, 1).to_record(root, directory_key),
    ]
    found, problems = published_keys(records, directory_key, (root.public,))
    assert list(found) == [CAROL] and found[CAROL].public == real
    assert found[CAROL].fingerprint == fingerprint_of(carol)
    assert found[CAROL].names(CAROL)
    assert problems == ["a published key record that is not signed by the pinned root",
                        "a published key it cannot use (not an OpenPGP key pgpy can read)"]


def test_a_key_over_the_limit_or_half_a_statement_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        PublishedKey(CAROL, FPR, bytes(MAX_PUBLISHED_KEY + 1), 1)
    with pytest.raises(ValueError, match="fingerprint"):
        PublishedKey(CAROL, None, KEY, 1)


def test_a_blob_pgpy_only_half_reads_is_not_a_key() -> None:
    """pgpy makes a key object without its key packet of these bytes (it used to be
    called a private key by `pgp import`); publisher and gateways say it is no key."""
    with pytest.raises(OpenPgpKeyError, match="not an OpenPGP key pgpy can read"):
        read_public_key(KEY)
