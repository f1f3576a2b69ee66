"""Envelope v1: known vectors, the spec's plaintext, limits and tampering (bridge/envelope.py)."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.bindings
import pytest
from nacl.public import SealedBox

from bridge.envelope import (
    BUCKET_STEP,
    ENVELOPE_ID_LEN,
    MAGIC,
    MAX_CIPHERTEXT_LEN,
    MAX_ENVELOPE_LEN,
    MAX_MESSAGE_BYTES,
    MAX_SENDER_BYTES,
    MIN_BUCKET,
    OUTER_HEADER_LEN,
    SEAL_OVERHEAD,
    OpenedEnvelope,
    inner_len,
    is_bucket,
    new_envelope_id,
    open_envelope,
    padded_size,
    parse_outer,
    seal,
)
from bridge.errors import CannotOpen
from bridge.keys import AccountKeys

DATA = Path(__file__).resolve().parents[1] / "data"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sealgate_envelope_vector_generator", DATA / "make_envelope_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
VECTORS: dict[str, Any] = json.loads((DATA / "envelope_vectors.json").read_text("utf-8"))

ALICE = AccountKeys(GEN.seed("alice"))
BOB = AccountKeys(GEN.seed("bob"))
MALLORY = AccountKeys(GEN.seed("mallory"))


def _refused(data: bytes, keys: AccountKeys) -> None:
    with pytest.raises(CannotOpen) as caught:
        open_envelope(data, keys)
    assert str(caught.value) == "cannot open envelope"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


# --- known vectors --------------------------------------------------------------------


def test_vector_file_is_what_the_generator_makes() -> None:
    assert (DATA / "envelope_vectors.json").read_text("utf-8") == GEN.render()


def test_vectors_cover_what_the_spec_promises() -> None:
    names = {v["name"] for v in VECTORS["envelopes"]}
    assert {"non-ascii", "multi-bucket-16KiB", "one-byte-over-4KiB"} <= names
    assert len({v["bucket"] for v in VECTORS["envelopes"]}) >= 3
    assert any(not v["sender"].isascii() for v in VECTORS["envelopes"])
    assert any(not bytes.fromhex(v["message_hex"]).isascii() for v in VECTORS["envelopes"])
    assert len(VECTORS["invalid_envelopes"]) >= 10


@pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=lambda v: v["name"])
def test_known_envelope_opens_to_every_listed_field(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["envelope_hex"])
    opened = open_envelope(data, AccountKeys(bytes.fromhex(vector["recipient_seed"])))
    assert opened == OpenedEnvelope(
        envelope_id=bytes.fromhex(vector["envelope_id"]),
        mailbox_id=bytes.fromhex(vector["mailbox_id"]),
        sender=vector["sender"],
        sender_signing_key=bytes.fromhex(vector["sender_signing_key"]),
        timestamp=vector["timestamp"],
        message=bytes.fromhex(vector["message_hex"]),
    )
    sender = AccountKeys(bytes.fromhex(vector["sender_seed"]))
    assert opened.sender_signing_key == sender.public.signing_key
    assert len(data) == OUTER_HEADER_LEN + vector["bucket"]
    assert parse_outer(data).ciphertext_len == vector["bucket"]


@pytest.mark.parametrize("vector", VECTORS["invalid_envelopes"], ids=lambda v: v["name"])
def test_known_bad_envelope_is_refused(vector: dict[str, Any]) -> None:
    recipient = AccountKeys(bytes.fromhex(vector["recipient_seed"]))
    _refused(bytes.fromhex(vector["envelope_hex"]), recipient)


@pytest.mark.parametrize("row", VECTORS["padded_size"], ids=lambda r: str(r["inner_len"]))
def test_padded_size_vectors(row: dict[str, int]) -> None:
    assert padded_size(row["inner_len"]) == row["bucket"]
    assert is_bucket(row["bucket"])


def test_known_envelope_is_a_libsodium_sealed_box() -> None:
    vector = VECTORS["envelopes"][0]
    data = bytes.fromhex(vector["envelope_hex"])
    plaintext = SealedBox(BOB.encryption).decrypt(data[OUTER_HEADER_LEN:])
    assert len(plaintext) == vector["bucket"] - SEAL_OVERHEAD
    assert bytes.fromhex(vector["message_hex"]) in plaintext


def test_seal_writes_the_plaintext_the_spec_describes() -> None:
    message = GEN.NON_ASCII_MESSAGE
    envelope_id = bytes(range(16))
    data = seal(message, sender="jürgen@bücher.example", sender_keys=ALICE,
                recipient=BOB.public, envelope_id=envelope_id, timestamp=1_234_567_890)
    plaintext = nacl.bindings.crypto_box_seal_open(
        data[OUTER_HEADER_LEN:], BOB.public.encryption_key, bytes(BOB.encryption)
    )
    inner = GEN.Inner(sender="jürgen@bücher.example".encode(), sender_key=ALICE.public.signing_key,
                      timestamp=1_234_567_890, message=message)
    expected = GEN.pad(GEN.inner_bytes(inner, GEN.ALICE, envelope_id, BOB.public.mailbox_id))
    assert plaintext == expected
    length = struct.pack(">I", len(data) - OUTER_HEADER_LEN)
    assert data[:OUTER_HEADER_LEN] == MAGIC + envelope_id + BOB.public.mailbox_id + length


# --- sealing --------------------------------------------------------------------------


def test_round_trip_and_outside() -> None:
    data = seal(b"Subject: hi\r\n\r\nhello\r\n", sender="alice@example.org",
                sender_keys=ALICE, recipient=BOB.public, timestamp=42)
    outer = parse_outer(data)
    assert outer.mailbox_id == BOB.public.mailbox_id
    assert outer.ciphertext_len == MIN_BUCKET
    opened = open_envelope(data, BOB)
    assert opened.envelope_id == outer.envelope_id
    assert opened.mailbox_id == BOB.public.mailbox_id
    assert (opened.sender, opened.timestamp) == ("alice@example.org", 42)
    assert opened.sender_signing_key == ALICE.public.signing_key
    assert opened.message == b"Subject: hi\r\n\r\nhello\r\n"


def test_other_byte_buffers_seal_and_open_alike() -> None:
    data = seal(bytearray(b"m\r\n"), sender="a@b", sender_keys=ALICE, recipient=BOB.public)
    assert open_envelope(bytearray(data), BOB) == open_envelope(data, BOB)
    assert open_envelope(data, BOB).message == b"m\r\n"


def test_default_timestamp_is_now() -> None:
    before = int(time.time())
    opened = open_envelope(seal(b"x", sender="a@b", sender_keys=ALICE, recipient=BOB.public), BOB)
    assert before <= opened.timestamp <= int(time.time())


def test_envelope_ids_are_fresh() -> None:
    ids = {new_envelope_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == ENVELOPE_ID_LEN for i in ids)
    one = seal(b"m", sender="a@b", sender_keys=ALICE, recipient=BOB.public)
    two = seal(b"m", sender="a@b", sender_keys=ALICE, recipient=BOB.public)
    assert parse_outer(one).envelope_id != parse_outer(two).envelope_id


def test_same_inputs_seal_differently_each_time() -> None:
    args: dict[str, Any] = dict(sender="a@b", sender_keys=ALICE, recipient=BOB.public,
                                envelope_id=bytes(16), timestamp=1)
    one, two = seal(b"m", **args), seal(b"m", **args)
    assert one != two  # fresh ephemeral key
    assert open_envelope(one, BOB) == open_envelope(two, BOB)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sender": ""}, "sender"),
        ({"sender": "a" * (MAX_SENDER_BYTES + 1)}, "sender"),
        ({"sender": "\udc80@example.org"}, "surrogates|utf-8"),
        ({"envelope_id": b"short"}, "envelope id"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 2**64}, "timestamp"),
    ],
)
def test_seal_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(sender="a@b", sender_keys=ALICE, recipient=BOB.public)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        seal(b"m", **args)


def test_longest_sender_and_extreme_timestamps_round_trip() -> None:
    sender = "é" * (MAX_SENDER_BYTES // 2)
    for timestamp in (0, 2**64 - 1):
        data = seal(b"", sender=sender, sender_keys=ALICE, recipient=BOB.public,
                    timestamp=timestamp)
        opened = open_envelope(data, BOB)
        assert (opened.sender, opened.timestamp, opened.message) == (sender, timestamp, b"")


def test_seal_refuses_a_message_over_the_limit() -> None:
    with pytest.raises(ValueError, match="larger than"):
        seal(bytes(MAX_MESSAGE_BYTES + 1), sender="a@b", sender_keys=ALICE, recipient=BOB.public)


def test_a_message_crossing_one_mib_lands_in_a_mib_multiple() -> None:
    message = bytes(BUCKET_STEP)
    data = seal(message, sender="a@b", sender_keys=ALICE, recipient=BOB.public)
    assert len(data) == OUTER_HEADER_LEN + 2 * BUCKET_STEP
    assert open_envelope(data, BOB).message == message


# --- buckets and limits ---------------------------------------------------------------


def test_buckets_are_powers_of_two_then_mib_multiples() -> None:
    fitting = MIN_BUCKET - SEAL_OVERHEAD - 1
    assert padded_size(0) == padded_size(fitting) == 4096
    assert padded_size(fitting + 1) == 8192
    sizes = sorted({padded_size(n) for n in range(0, 3 * BUCKET_STEP, 997)})
    assert sizes == [4096 << i for i in range(9)] + [2 * BUCKET_STEP, 3 * BUCKET_STEP]
    assert 4096 << 8 == BUCKET_STEP
    for n in range(0, 3 * BUCKET_STEP, 4099):
        bucket, need = padded_size(n), n + 1 + SEAL_OVERHEAD
        assert is_bucket(bucket) and bucket >= need
        smaller = bucket // 2 if bucket <= BUCKET_STEP else bucket - BUCKET_STEP
        assert bucket == MIN_BUCKET or smaller < need  # the smallest bucket that fits
    with pytest.raises(ValueError):
        padded_size(-1)


def test_is_bucket_refuses_other_lengths() -> None:
    for n in (0, 48, 4095, 4097, 6000, 3 * BUCKET_STEP // 2, BUCKET_STEP + 4096,
              MAX_CIPHERTEXT_LEN + BUCKET_STEP):
        assert not is_bucket(n)
    assert is_bucket(MAX_CIPHERTEXT_LEN)
    assert MAX_CIPHERTEXT_LEN == padded_size(inner_len(MAX_SENDER_BYTES, MAX_MESSAGE_BYTES))
    assert MAX_ENVELOPE_LEN == OUTER_HEADER_LEN + MAX_CIPHERTEXT_LEN == 56 + 65 * BUCKET_STEP


def test_open_refuses_oversized_length_before_reading_on() -> None:
    for length in (MAX_CIPHERTEXT_LEN + BUCKET_STEP, 2**32 - 1):
        header = MAGIC + bytes(16) + BOB.public.mailbox_id + struct.pack(">I", length)
        _refused(header, BOB)
        _refused(header + bytes(100), BOB)


# --- tampering ------------------------------------------------------------------------

SMALL = seal(b"Subject: s\r\n\r\nsecret\r\n", sender="alice@example.org",
             sender_keys=ALICE, recipient=BOB.public)


def test_small_envelope_opens() -> None:
    assert open_envelope(SMALL, BOB).message == b"Subject: s\r\n\r\nsecret\r\n"


def test_every_single_byte_change_is_refused() -> None:
    for position in range(len(SMALL)):
        changed = bytearray(SMALL)
        changed[position] ^= 0x01
        _refused(bytes(changed), BOB)


def test_every_truncation_is_refused() -> None:
    for length in range(len(SMALL)):
        _refused(SMALL[:length], BOB)


def test_extensions_are_refused() -> None:
    for tail in (b"\0", b"\x80", bytes(4096), SMALL):
        _refused(SMALL + tail, BOB)
    # A bigger bucket with the length field to match: the sealed box no longer opens.
    grown = SMALL[:52] + struct.pack(">I", 8192) + SMALL[OUTER_HEADER_LEN:] + bytes(4096)
    _refused(grown, BOB)


def test_ciphertext_swapped_between_envelopes_is_refused() -> None:
    other = seal(b"other", sender="alice@example.org", sender_keys=ALICE, recipient=BOB.public)
    _refused(SMALL[:OUTER_HEADER_LEN] + other[OUTER_HEADER_LEN:], BOB)


def test_only_the_recipient_can_open() -> None:
    _refused(SMALL, MALLORY)
    _refused(SMALL, ALICE)
    _refused(SMALL, AccountKeys.generate())


def test_readdressed_by_a_recipient_who_is_not_the_sender_is_refused() -> None:
    # Alice writes to Mallory. Mallory can read it and re-seal the signed inner record.
    for_mallory = seal(b"for Mallory only", sender="alice@example.org", sender_keys=ALICE,
                       recipient=MALLORY.public)
    outer = parse_outer(for_mallory)
    inner = nacl.bindings.crypto_box_seal_open(
        for_mallory[OUTER_HEADER_LEN:], MALLORY.public.encryption_key, bytes(MALLORY.encryption)
    )
    resealed = nacl.bindings.crypto_box_seal(inner, BOB.public.encryption_key)
    length = struct.pack(">I", len(resealed))
    # Outside says Bob's mailbox: Alice's signature was over Mallory's.
    _refused(MAGIC + outer.envelope_id + BOB.public.mailbox_id + length + resealed, BOB)
    # Outside keeps Mallory's mailbox id: not Bob's mailbox.
    _refused(MAGIC + outer.envelope_id + outer.mailbox_id + length + resealed, BOB)
    # The same inner record opens fine where it was addressed.
    assert open_envelope(for_mallory, MALLORY).message == b"for Mallory only"


def test_sender_key_swapped_inside_is_refused() -> None:
    outer = parse_outer(SMALL)
    plaintext = bytearray(nacl.bindings.crypto_box_seal_open(
        SMALL[OUTER_HEADER_LEN:], BOB.public.encryption_key, bytes(BOB.encryption)
    ))
    key_at = 3 + len("alice@example.org")
    plaintext[key_at:key_at + 32] = MALLORY.public.signing_key
    resealed = nacl.bindings.crypto_box_seal(bytes(plaintext), BOB.public.encryption_key)
    _refused(outer.pack() + resealed, BOB)


def test_unrelated_input_is_refused() -> None:
    for data in (b"", MAGIC, b"GET / HTTP/1.1\r\n\r\n", bytes(OUTER_HEADER_LEN + 4096)):
        _refused(data, BOB)

