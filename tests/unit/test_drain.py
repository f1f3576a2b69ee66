"""Drain statements: root-signed, sealed, bound to one relay URL."""

from __future__ import annotations

import dataclasses

import nacl.utils
import pytest

from bridge.directory import DirectoryRecord
from bridge.drain import DrainStatement, drain_lookup_id
from bridge.errors import DirectoryError
from bridge.keys import RootKey

URL = "https://relay-1.example.org"


@pytest.fixture
def keys() -> tuple[RootKey, bytes]:
    return RootKey.generate(), nacl.utils.random(32)


def test_a_statement_round_trips_and_ignores_a_trailing_slash(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    record = DrainStatement(URL + "/", True, 7).to_record(root, directory_key)
    assert record.lookup_id == drain_lookup_id(directory_key, URL)
    assert record.version == 7
    assert URL.encode() not in record.sealed
    opened = DrainStatement.from_record(record, URL, directory_key, (root.public,))
    assert opened == DrainStatement(URL, True, 7)
    record.verify_publisher((root.public,))  # a relay accepts it like any record


def test_a_statement_opens_only_for_its_relay_root_and_key(
    keys: tuple[RootKey, bytes]
) -> None:
    root, directory_key = keys
    record = DrainStatement(URL, False, 1).to_record(root, directory_key)
    with pytest.raises(DirectoryError):
        DrainStatement.from_record(record, "https://relay-2.example.org", directory_key,
                                   (root.public,))
    with pytest.raises(DirectoryError):
        DrainStatement.from_record(record, URL, directory_key, (RootKey.generate().public,))
    with pytest.raises(DirectoryError):
        DrainStatement.from_record(record, URL, nacl.utils.random(32), (root.public,))


def test_a_changed_byte_or_a_forged_record_is_refused(keys: tuple[RootKey, bytes]) -> None:
    root, directory_key = keys
    record = DrainStatement(URL, True, 3).to_record(root, directory_key)
    sealed = bytearray(record.sealed)
    sealed[-1] ^= 1
    for bad in (
        dataclasses.replace(record, sealed=bytes(sealed)),
        dataclasses.replace(record, version=4),  # the root signed version 3
    ):
        with pytest.raises(DirectoryError):
            DrainStatement.from_record(bad, URL, directory_key, (root.public,))
    # Someone without the root key cannot make one, even with the directory key.
    forged = DrainStatement(URL, False, 9).to_record(RootKey.generate(), directory_key)
    with pytest.raises(DirectoryError):
        DrainStatement.from_record(
            DirectoryRecord(forged.lookup_id, 9, forged.sealed, forged.signature),
            URL, directory_key, (root.public,),
        )
