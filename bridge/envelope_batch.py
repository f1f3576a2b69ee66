"""The body of a batch deposit: envelopes framed by length, one after the other.

    frame = length (4 bytes, big-endian, at least 1) || envelope (length bytes)
    body  = frame, repeated at least once; nothing after the last frame

This module is pure: it packs and parses bytes and does no I/O. The relay checks
each envelope's own format after framing (`bridge.envelope.parse_outer`), so a bad
envelope refuses only itself; bad framing refuses the whole body.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

from bridge.errors import BridgeError

_LENGTH = struct.Struct(">I")
FRAME_OVERHEAD = _LENGTH.size  # bytes a frame adds to its envelope


class BatchOutcome(enum.Enum):
    """What a relay did with one envelope of a batch (the answer's `outcome`)."""

    CREATED = "created"  # stored now
    DUPLICATE = "duplicate"  # the same bytes were stored under this id already
    CONFLICT = "conflict"  # different bytes are stored under this id; nothing changed
    MALFORMED = "malformed"  # not an envelope; nothing stored
    STORAGE_FULL = "storage_full"  # does not fit; nothing stored

    @property
    def taken(self) -> bool:
        """The relay holds this envelope now."""
        return self in (BatchOutcome.CREATED, BatchOutcome.DUPLICATE)


class BatchFormatError(BridgeError):
    """The body is not a batch (`too_large`: the batch or an envelope is over a limit)."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def pack_batch(envelopes: Iterable[bytes]) -> bytes:
    """The batch body for `envelopes` (at least one, none empty)."""
    parts: list[bytes] = []
    for envelope in envelopes:
        if not envelope:
            raise ValueError("an envelope in a batch must not be empty")
        parts += (_LENGTH.pack(len(envelope)), envelope)
    if not parts:
        raise ValueError("a batch holds at least one envelope")
    return b"".join(parts)


def parse_batch(body: bytes, *, max_envelopes: int, max_envelope_bytes: int) -> list[bytes]:
    """The envelopes of a batch body, in order; BatchFormatError if it is not one."""
    envelopes: list[bytes] = []
    view = memoryview(body)
    offset, end = 0, len(body)
    if not end:
        raise BatchFormatError("empty batch")
    while offset < end:
        if end - offset < FRAME_OVERHEAD:
            raise BatchFormatError("truncated batch frame")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += FRAME_OVERHEAD
        if length == 0:
            raise BatchFormatError("empty envelope in batch")
        if length > max_envelope_bytes:
            raise BatchFormatError("envelope in batch too large", too_large=True)
        if length > end - offset:
            raise BatchFormatError("truncated batch frame")
        if len(envelopes) == max_envelopes:
            raise BatchFormatError("too many envelopes in batch", too_large=True)
        envelopes.append(bytes(view[offset:offset + length]))
        offset += length
    return envelopes
