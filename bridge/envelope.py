"""Envelope v1: one message sealed for one recipient mailbox.

Outside (all a relay sees), big-endian:

    magic        4 bytes   b"SGE\\x01" (the last byte is the format version)
    envelope_id 16 bytes   random
    mailbox_id  32 bytes   the recipient's opaque mailbox id
    length       4 bytes   length of the ciphertext that follows
    ciphertext   length    padded to a size bucket

The inside, the padding and the signature are specified in docs/envelope.md.
This module does no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bridge.errors import EnvelopeFormatError
from bridge.keys import MAILBOX_ID_LEN

MAGIC = b"SGE\x01"
ENVELOPE_ID_LEN = 16
_OUTER = struct.Struct(">4s16s32sI")
OUTER_HEADER_LEN = _OUTER.size  # 56


@dataclass(frozen=True)
class OuterHeader:
    """The cleartext part of an envelope."""

    envelope_id: bytes
    mailbox_id: bytes
    ciphertext_len: int

    def pack(self) -> bytes:
        return _OUTER.pack(MAGIC, self.envelope_id, self.mailbox_id, self.ciphertext_len)


def parse_outer(data: bytes) -> OuterHeader:
    """Check the structure of an envelope and return its outside; no key needed.

    Raises `EnvelopeFormatError` for wrong magic/version or a length that does not
    match the data. Relays call this on every deposit.
    """
    if len(data) < OUTER_HEADER_LEN:
        raise EnvelopeFormatError("envelope shorter than its header")
    magic, envelope_id, mailbox_id, length = _OUTER.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeFormatError("not a Sealgate v1 envelope")
    if len(data) != OUTER_HEADER_LEN + length:
        raise EnvelopeFormatError("envelope length does not match its header")
    assert len(mailbox_id) == MAILBOX_ID_LEN  # noqa: S101 - struct guarantees it
    return OuterHeader(envelope_id=envelope_id, mailbox_id=mailbox_id, ciphertext_len=length)
