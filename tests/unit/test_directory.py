"""The signed directory: addresses, lookup ids, entries and records (bridge/directory.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.directory import (
    DIRECTORY_KEY_LEN,
    ENTRY_CONTEXT,
    MAX_ADDRESS_BYTES,
    MAX_ENTRY_BYTES,
    MAX_OLD_SIGNING_KEYS,
    RECORD_CONTEXT,
    DirectoryEntry,
    DirectoryRecord,
    KeyStatus,
    lookup_id,
    make_record,
    normalize_address,
    open_record,
)
from bridge.errors import DirectoryError
from bridge.keys import AccountKeys, RootKey

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "envelope_vectors.json").read_text("utf-8")
)

ROOT = RootKey(bytes(range(32)))
OTHER_ROOT = RootKey(bytes(range(1, 33)))
KEY = bytes(range(100, 132))
ALICE = AccountKeys(bytes(32))
ENTRY = DirectoryEntry(
    address="Alice@Example.org", keys=ALICE.public,
    relays=("https://relay-a.example:8443", "https://relay-b.example"), issued_at=1_700_000_000,
)


def _fails(record: DirectoryRecord, key: bytes = KEY,
           roots: tuple[bytes, ...] = (ROOT.public,)) -> str:
    with pytest.raises(DirectoryError) as caught:
        open_record(record, key, roots)
    message = str(caught.value)
    assert "alice" not in message.lower() and "example" not in message
    return message


def _seal_inner(inner: bytes, record_id: bytes, key: bytes = KEY) -> bytes:
    nonce = bytes(24)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        inner, record_id, nonce, key
    )


def _record(lid: bytes, sealed: bytes, root: RootKey = ROOT, version: int = 1) -> DirectoryRecord:
    unsigned = DirectoryRecord(lid, version, sealed, b"")
    return DirectoryRecord(lid, version, sealed, root.sign(RECORD_CONTEXT,
                                                           unsigned.publisher_message()))


# --- addresses and lookup ids ---------------------------------------------------------


@pytest.mark.parametrize("row", VECTORS["lookup_ids"], ids=lambda r: r["address"].strip())
def test_lookup_id_vectors(row: dict[str, str]) -> None:
    key = bytes.fromhex(row["directory_key"])
    assert normalize_address(row["address"]) == row["normalized"]
    assert lookup_id(key, row["address"]).hex() == row["lookup_id"]


def test_normalize_address() -> None:
    assert normalize_address("  Alice@Example.ORG\r\n") == "alice@example.org"
    assert normalize_address("ZOË@EXAMPLE.ORG") == "zoë@example.org"
    assert normalize_address("zoe\u0308@example.org") == "zoë@example.org"  # NFC
    assert normalize_address('"a@b"@c.example') == '"a@b"@c.example'


@pytest.mark.parametrize(
    "address",
    ["", "   ", "alice", "alice@", "@example.org", "al ice@example.org", "al\tice@example.org",
     "alice@exa\x00mple.org", "alice\x7f@example.org", "al\u200bice@example.org",
     "alice@example.org\u2028x", "a" * MAX_ADDRESS_BYTES + "@x"],
)
def test_normalize_address_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(address)


@settings(max_examples=300, deadline=None)
@given(local=st.text(min_size=1, max_size=30), domain=st.text(min_size=1, max_size=30))
def test_normalize_address_is_idempotent_or_refuses(local: str, domain: str) -> None:
    try:
        normalized = normalize_address(f"{local}@{domain}")
    except ValueError:
        return
    assert normalize_address(normalized) == normalized
    entry = DirectoryEntry(address=normalized, keys=ALICE.public, relays=(), issued_at=0)
    assert DirectoryEntry.from_bytes(entry.to_bytes()) == entry


def test_lookup_id_depends_on_key_and_normalized_address() -> None:
    assert lookup_id(KEY, "alice@example.org") == lookup_id(KEY, " ALICE@example.org")
    assert lookup_id(KEY, "alice@example.org") != lookup_id(KEY, "bob@example.org")
    assert lookup_id(KEY, "alice@example.org") != lookup_id(bytes(32), "alice@example.org")
    assert len(lookup_id(KEY, "alice@example.org")) == 32
    with pytest.raises(ValueError, match="directory key"):
        lookup_id(bytes(DIRECTORY_KEY_LEN - 1), "alice@example.org")
    with pytest.raises(ValueError):
        lookup_id(KEY, "no address")


# --- entries --------------------------------------------------------------------------


def test_entry_is_normalized_and_canonical() -> None:
    assert ENTRY.address == "alice@example.org"
    assert ENTRY.mailbox_id == ALICE.public.mailbox_id
    pub = ALICE.public
    assert ENTRY.to_bytes() == (
        '{"address":"alice@example.org","issued_at":1700000000,"keys":{'
        f'"encryption":"{pub.encryption_key.hex()}","mailbox":"{pub.mailbox_key.hex()}",'
        f'"signing":"{pub.signing_key.hex()}"}},"previous_signing":[],'
        '"relays":["https://relay-a.example:8443","https://relay-b.example"],'
        '"revoked":false,"revoked_signing":[],"v":2,"version":1}'
    ).encode()
    assert DirectoryEntry.from_bytes(ENTRY.to_bytes()) == ENTRY


def test_entry_with_non_ascii_address_round_trips() -> None:
    entry = DirectoryEntry(address="Jürgen@Bücher.example", keys=ALICE.public, relays=(),
                           issued_at=0)
    assert "jürgen@bücher.example".encode() in entry.to_bytes()
    assert DirectoryEntry.from_bytes(entry.to_bytes()) == entry


def _variant(**changes: Any) -> bytes:
    document = json.loads(ENTRY.to_bytes())
    for name, value in changes.items():
        if value is None:
            del document[name]
        else:
            document[name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"", b"not json", b"[]", b"\xff\xfe", b'{"v":2}',
        _variant(v=1), _variant(v=3), _variant(v=True), _variant(v=None), _variant(extra="x"),
        _variant(version=0), _variant(version=-1), _variant(version=1.0),
        _variant(version=True), _variant(version=2**63), _variant(version=None),
        _variant(revoked=None), _variant(revoked=0), _variant(revoked="false"),
        _variant(previous_signing=None), _variant(previous_signing="00" * 32),
        _variant(previous_signing=["00" * 31]), _variant(previous_signing=["AB" * 32]),
        _variant(previous_signing=["00" * 32, "00" * 32]), _variant(revoked_signing=None),
        _variant(previous_signing=["00" * 32], revoked_signing=["00" * 32]),
        _variant(previous_signing=[f"{n:064x}" for n in range(MAX_OLD_SIGNING_KEYS + 1)]),
        _variant(address="Alice@example.org"), _variant(address="no-at-sign"),
        _variant(address=7), _variant(issued_at=-1), _variant(issued_at=1.5),
        _variant(issued_at=True), _variant(relays="https://relay"), _variant(relays=[""]),
        _variant(relays=["https://re lay"]), _variant(relays=[1]), _variant(keys=[]),
        _variant(keys={"encryption": "00" * 32, "mailbox": "00" * 32}),
        _variant(keys={"encryption": "00" * 31, "mailbox": "00" * 32, "signing": "00" * 32}),
        _variant(keys={"encryption": "AB" * 32, "mailbox": "00" * 32, "signing": "00" * 32}),
        ENTRY.to_bytes().replace(b"https://relay-b.example", b"\\ud800"),  # lone surrogate
        ENTRY.to_bytes().replace(b":", b": ", 1),
        ENTRY.to_bytes() + b"\n",
        json.dumps(json.loads(ENTRY.to_bytes()), sort_keys=True).encode(),
        b" " * (MAX_ENTRY_BYTES + 1),
    ],
)
def test_entry_from_bytes_refuses_anything_not_canonical(data: bytes) -> None:
    with pytest.raises(DirectoryError):
        DirectoryEntry.from_bytes(data)


def test_entry_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        DirectoryEntry(address="nobody", keys=ALICE.public, relays=(), issued_at=0)
    with pytest.raises(ValueError):
        DirectoryEntry(address="a@b", keys=ALICE.public, relays=("x",) * 17, issued_at=0)
    with pytest.raises(ValueError):
        DirectoryEntry(address="a@b", keys=ALICE.public, relays=(), issued_at=-5)


# --- records --------------------------------------------------------------------------


def test_record_round_trip() -> None:
    record = make_record(ENTRY, ROOT, KEY)
    assert record.lookup_id == lookup_id(KEY, "alice@example.org")
    assert b"alice" not in record.sealed and b"relay-a" not in record.sealed
    assert record.verify_publisher((OTHER_ROOT.public, ROOT.public)) == ROOT.public
    assert open_record(record, KEY, (OTHER_ROOT.public, ROOT.public)) == ENTRY
    assert open_record(DirectoryRecord.from_json(record.to_json()), KEY, (ROOT.public,)) == ENTRY


def test_records_of_one_entry_differ_by_nonce() -> None:
    one, two = make_record(ENTRY, ROOT, KEY), make_record(ENTRY, ROOT, KEY)
    assert one.lookup_id == two.lookup_id and one.sealed != two.sealed


def test_record_by_untrusted_root_is_refused() -> None:
    record = make_record(ENTRY, OTHER_ROOT, KEY)
    assert "trusted root" in _fails(record)
    _fails(record, roots=())


def test_record_with_altered_sealed_part_is_refused() -> None:
    record = make_record(ENTRY, ROOT, KEY)
    for position in (0, 23, 24, len(record.sealed) // 2, len(record.sealed) - 1):
        sealed = bytearray(record.sealed)
        sealed[position] ^= 0x01
        # Unchanged signature: the outer signature catches it.
        assert "trusted root" in _fails(DirectoryRecord(record.lookup_id, record.version,
                                                        bytes(sealed), record.signature))
        # Re-signed by the root (say, a root that signed garbage): the AEAD catches it.
        assert "directory key" in _fails(_record(record.lookup_id, bytes(sealed)))
    assert "too short" in _fails(_record(record.lookup_id, record.sealed[:60]))


def test_record_moved_to_another_lookup_id_is_refused() -> None:
    record = make_record(ENTRY, ROOT, KEY)
    other_id = lookup_id(KEY, "bob@example.org")
    assert "trusted root" in _fails(
        DirectoryRecord(other_id, record.version, record.sealed, record.signature)
    )
    assert "directory key" in _fails(_record(other_id, record.sealed))


def test_entry_filed_under_another_address_is_refused() -> None:
    entry_bytes = ENTRY.to_bytes()
    inner = entry_bytes + ROOT.sign(ENTRY_CONTEXT, entry_bytes)
    other_id = lookup_id(KEY, "bob@example.org")
    assert "another lookup id" in _fails(_record(other_id, _seal_inner(inner, other_id)))


def test_entry_signed_by_another_root_than_the_record_is_refused() -> None:
    entry_bytes = ENTRY.to_bytes()
    lid = lookup_id(KEY, ENTRY.address)
    inner = entry_bytes + OTHER_ROOT.sign(ENTRY_CONTEXT, entry_bytes)
    message = _fails(_record(lid, _seal_inner(inner, lid)),
                     roots=(ROOT.public, OTHER_ROOT.public))
    assert "not signed" in message


def test_entry_signature_needs_the_entry_context() -> None:
    entry_bytes = ENTRY.to_bytes()
    lid = lookup_id(KEY, ENTRY.address)
    inner = entry_bytes + ROOT.sign(RECORD_CONTEXT, entry_bytes)
    assert "not signed" in _fails(_record(lid, _seal_inner(inner, lid)))


def test_malformed_entry_inside_a_good_record_is_refused() -> None:
    lid = lookup_id(KEY, ENTRY.address)
    bad = ENTRY.to_bytes().replace(b'"v":2', b'"v":1')
    inner = bad + ROOT.sign(ENTRY_CONTEXT, bad)
    assert "malformed" in _fails(_record(lid, _seal_inner(inner, lid)))


def test_wrong_directory_key_is_refused() -> None:
    record = make_record(ENTRY, ROOT, KEY)
    assert "directory key" in _fails(record, key=bytes(32))
    with pytest.raises(ValueError, match="directory key"):
        open_record(record, KEY[:16], (ROOT.public,))
    with pytest.raises(ValueError, match="directory key"):
        make_record(ENTRY, ROOT, KEY + b"x")


@pytest.mark.parametrize(
    "data",
    [
        None, [], "x", {}, {"lookup_id": "00" * 32, "sealed": "", "signature": ""},
        {"lookup_id": "00" * 32, "sealed": "", "signature": "A" * 86 + "=="},  # no version
        {"lookup_id": "00" * 32, "version": 0, "sealed": "", "signature": "A" * 86 + "=="},
        {"lookup_id": "00" * 32, "version": "2", "sealed": "", "signature": "A" * 86 + "=="},
        {"lookup_id": "00" * 32, "version": True, "sealed": "", "signature": "A" * 86 + "=="},
        {"lookup_id": "zz", "sealed": "", "signature": "A" * 88},
        {"lookup_id": "00" * 31, "sealed": "", "signature": "A" * 86 + "=="},
        {"lookup_id": "00" * 32, "sealed": "!!", "signature": "A" * 86 + "=="},
        {"lookup_id": 5, "sealed": "", "signature": "A" * 86 + "=="},
    ],
)
def test_record_from_json_refuses_malformed(data: object) -> None:
    with pytest.raises(DirectoryError, match="malformed directory record"):
        DirectoryRecord.from_json(data)


# --- versions, rotation and revocation -------------------------------------------------


def test_version_is_outside_under_the_record_signature_and_inside_the_entry() -> None:
    entry = dataclasses.replace(ENTRY, version=7)
    record = make_record(entry, ROOT, KEY)
    assert record.version == 7 and record.to_json()["version"] == 7
    assert open_record(record, KEY, (ROOT.public,)).version == 7
    # A relay (or anyone) cannot raise the outer version of an old record: it is signed.
    bumped = DirectoryRecord(record.lookup_id, 8, record.sealed, record.signature)
    assert "trusted root" in _fails(bumped)


def test_outer_version_must_equal_the_entry_version() -> None:
    entry = dataclasses.replace(ENTRY, version=3)
    lid = lookup_id(KEY, entry.address)
    entry_bytes = entry.to_bytes()
    inner = entry_bytes + ROOT.sign(ENTRY_CONTEXT, entry_bytes)
    assert "version does not match" in _fails(_record(lid, _seal_inner(inner, lid), version=4))


def test_signing_key_status() -> None:
    old, older, stolen = (AccountKeys(bytes([n]) * 32).public.signing_key for n in (1, 2, 3))
    entry = dataclasses.replace(ENTRY, previous_signing=(older, old), revoked_signing=(stolen,))
    assert DirectoryEntry.from_bytes(entry.to_bytes()) == entry
    assert entry.signing_key_status(ALICE.public.signing_key) is KeyStatus.CURRENT
    assert entry.signing_key_status(old) is KeyStatus.PREVIOUS
    assert entry.signing_key_status(stolen) is KeyStatus.REVOKED
    assert entry.signing_key_status(bytes(32)) is KeyStatus.UNKNOWN
    revoked = dataclasses.replace(entry, revoked=True)
    for key in (ALICE.public.signing_key, old, stolen):
        assert revoked.signing_key_status(key) is KeyStatus.REVOKED
    assert [s.accepted for s in KeyStatus] == [True, True, False, False]


def test_entry_refuses_a_key_listed_twice() -> None:
    current = ALICE.public.signing_key
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(ENTRY, previous_signing=(current,))
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(ENTRY, previous_signing=(bytes(32),), revoked_signing=(bytes(32),))
    with pytest.raises(ValueError, match="at most"):
        dataclasses.replace(
            ENTRY, previous_signing=tuple(bytes([n]) * 32 for n in range(MAX_OLD_SIGNING_KEYS + 1))
        )
