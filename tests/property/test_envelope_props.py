"""Envelope v1 properties: round trips, sizes, and that no change of a byte goes unnoticed."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.envelope import (
    MAGIC,
    MAX_SENDER_BYTES,
    OUTER_HEADER_LEN,
    inner_len,
    is_bucket,
    open_envelope,
    padded_size,
    parse_outer,
    seal,
)
from bridge.errors import CannotOpen
from bridge.keys import AccountKeys

SENDER = AccountKeys(bytes(range(32)))
RECIPIENT = AccountKeys(bytes(range(32, 64)))
SMALL = seal(b"Subject: p\r\n\r\nproperty\r\n", sender="alice@example.org",
             sender_keys=SENDER, recipient=RECIPIENT.public)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Any bytes, up to ~200 KB: short ones drawn byte by byte, long ones from a pattern."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    pattern = draw(st.binary(min_size=1, max_size=64))
    size = draw(st.integers(min_value=0, max_value=200_000))
    return (pattern * (size // len(pattern) + 1))[:size]


senders = st.text(min_size=1, max_size=200).filter(
    lambda s: len(s.encode("utf-8")) <= MAX_SENDER_BYTES
)


def _is_refused(data: bytes, keys: AccountKeys) -> bool:
    try:
        open_envelope(data, keys)
    except CannotOpen as e:
        return str(e) == "cannot open envelope"
    return False


@FAST
@given(message=messages(), sender=senders,
       timestamp=st.integers(min_value=0, max_value=2**64 - 1))
def test_seal_then_open_gives_back_every_field(message: bytes, sender: str, timestamp: int) -> None:
    data = seal(message, sender=sender, sender_keys=SENDER, recipient=RECIPIENT.public,
                timestamp=timestamp)
    bucket = padded_size(inner_len(len(sender.encode("utf-8")), len(message)))
    assert len(data) == OUTER_HEADER_LEN + bucket
    assert is_bucket(bucket)
    outer = parse_outer(data)
    opened = open_envelope(data, RECIPIENT)
    assert opened.envelope_id == outer.envelope_id
    assert opened.mailbox_id == RECIPIENT.public.mailbox_id == outer.mailbox_id
    assert opened.sender == sender
    assert opened.sender_signing_key == SENDER.public.signing_key
    assert opened.timestamp == timestamp
    assert opened.message == message


@FAST
@given(message=st.binary(max_size=256))
def test_envelope_ids_differ_between_seals(message: bytes) -> None:
    one = seal(message, sender="a@b", sender_keys=SENDER, recipient=RECIPIENT.public)
    two = seal(message, sender="a@b", sender_keys=SENDER, recipient=RECIPIENT.public)
    assert parse_outer(one).envelope_id != parse_outer(two).envelope_id


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(SMALL) - 1),
       value=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_is_refused(position: int, value: int) -> None:
    changed = bytearray(SMALL)
    changed[position] ^= value
    assert _is_refused(bytes(changed), RECIPIENT)


@FAST
@given(cut=st.integers(min_value=0, max_value=len(SMALL) - 1), tail=st.binary(max_size=64))
def test_truncated_or_extended_is_refused(cut: int, tail: bytes) -> None:
    assert _is_refused(SMALL[:cut], RECIPIENT)
    assert _is_refused(SMALL[:cut] + tail, RECIPIENT) or SMALL[:cut] + tail == SMALL
    if tail:
        assert _is_refused(SMALL + tail, RECIPIENT)


@FAST
@given(data=st.binary(max_size=8192))
def test_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert _is_refused(data, RECIPIENT)


@FAST
@given(envelope_id=st.binary(min_size=16, max_size=16), body=st.binary(max_size=256),
       length=st.sampled_from([4096, 8192, 0, 48, 2**32 - 1]))
def test_well_framed_garbage_is_refused(envelope_id: bytes, body: bytes, length: int) -> None:
    header = MAGIC + envelope_id + RECIPIENT.public.mailbox_id + struct.pack(">I", length)
    # As long as the header says (when that is small), else whatever the body is.
    size = length if length <= 8192 else len(body)
    ciphertext = ((body or b"\0") * (size // max(len(body), 1) + 1))[:size]
    assert _is_refused(header + ciphertext, RECIPIENT)
