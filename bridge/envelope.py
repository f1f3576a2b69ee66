"""Envelope v1: one message sealed for one recipient mailbox.

Outside (all a relay sees), big-endian:

    magic        4 bytes   b"SGE\\x01" (the last byte is the format version)
    envelope_id 16 bytes   random
    mailbox_id  32 bytes   the recipient's opaque mailbox id
    length       4 bytes   length of the ciphertext that follows
    ciphertext   length    padded to a size bucket

Inside the ciphertext (a libsodium sealed box to the recipient's X25519 key) is the
inner record: version, sender address, sender verify key, timestamp, message and
the sender's Ed25519 signature over all of it bound to envelope_id and mailbox_id,
then ISO/IEC 7816-4 padding up to the bucket. docs/envelope.md is the normative
description, byte for byte; tests/data/envelope_vectors.json holds its vectors.

`open_envelope` says only "cannot open envelope", whatever went wrong. It checks
that the sender's signature is valid for the verify key sealed inside; whether that
key belongs to the sender address is the caller's question for the directory.

This module does no I/O, keeps no state, and never logs.
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

from bridge.errors import CannotOpen, EnvelopeFormatError
from bridge.keys import MAILBOX_ID_LEN, AccountKeys, AccountPublic

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


# --- the inside ------------------------------------------------------------------------

INNER_VERSION = 1
MAX_SENDER_BYTES = 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SEAL_OVERHEAD = nacl.bindings.crypto_box_SEALBYTES  # 32-byte ephemeral key + 16-byte MAC
SIGNATURE_LEN = 64
SIGNATURE_CONTEXT = b"sealgate-envelope-v1\0"
DIGEST_PERSON = b"sg-envelope-v1\0\0"  # BLAKE2b personalisation, 16 bytes

MIN_BUCKET = 4 * 1024
BUCKET_STEP = 1024 * 1024
_PAD_MARK = 0x80

_HEAD = struct.Struct(">BH")  # inner version, sender length
_MIDDLE = struct.Struct(">32sQI")  # sender verify key, timestamp, message length
_FIXED_INNER = _HEAD.size + _MIDDLE.size + SIGNATURE_LEN  # 111
_MAX_TIMESTAMP = 2**64 - 1


def inner_len(sender_len: int, message_len: int) -> int:
    """Bytes of the unpadded inner record for a sender and message of these lengths."""
    return _FIXED_INNER + sender_len + message_len


def padded_size(n: int) -> int:
    """The bucket for an unpadded inner record of `n` bytes.

    The bucket is the ciphertext length on the outside: the inner record, one 0x80
    byte, zeros, and the 48 bytes the sealed box adds fill it exactly. Buckets are
    the powers of two from 4 KiB to 1 MiB, then the multiples of 1 MiB.
    """
    if n < 0:
        raise ValueError("length must not be negative")
    need = n + 1 + SEAL_OVERHEAD
    if need <= MIN_BUCKET:
        return MIN_BUCKET
    if need <= BUCKET_STEP:
        return 1 << (need - 1).bit_length()
    return -(-need // BUCKET_STEP) * BUCKET_STEP


MAX_CIPHERTEXT_LEN = padded_size(inner_len(MAX_SENDER_BYTES, MAX_MESSAGE_BYTES))
MAX_ENVELOPE_LEN = OUTER_HEADER_LEN + MAX_CIPHERTEXT_LEN


def is_bucket(ciphertext_len: int) -> bool:
    """Whether a ciphertext of this length can be a v1 envelope's (a bucket, within limits)."""
    if not MIN_BUCKET <= ciphertext_len <= MAX_CIPHERTEXT_LEN:
        return False
    if ciphertext_len <= BUCKET_STEP:
        return ciphertext_len & (ciphertext_len - 1) == 0
    return ciphertext_len % BUCKET_STEP == 0


@dataclass(frozen=True)
class OpenedEnvelope:
    """An opened, signature-checked envelope."""

    envelope_id: bytes  # 16
    mailbox_id: bytes  # 32
    sender: str  # sender address as sealed inside
    sender_signing_key: bytes  # Ed25519 verify key (32) of the sender, as sealed inside
    timestamp: int  # unix seconds, sender's clock
    message: bytes  # the sanitized RFC 5322 message


def new_envelope_id() -> bytes:
    """A fresh random envelope id."""
    return nacl.utils.random(ENVELOPE_ID_LEN)


def _signed_digest(envelope_id: bytes, mailbox_id: bytes, *parts: bytes | memoryview) -> bytes:
    """BLAKE2b-512 over envelope_id || mailbox_id || the inner record before its signature."""
    h = hashlib.blake2b(digest_size=64, person=DIGEST_PERSON)
    h.update(envelope_id)
    h.update(mailbox_id)
    for part in parts:
        h.update(part)
    return h.digest()


def seal(
    message: bytes,
    *,
    sender: str,
    sender_keys: AccountKeys,
    recipient: AccountPublic,
    envelope_id: bytes | None = None,
    timestamp: int | None = None,
) -> bytes:
    """Sign and seal `message` from `sender` for `recipient`; return the whole envelope.

    Raises ValueError for a message over MAX_MESSAGE_BYTES, a sender that is empty,
    not encodable as UTF-8 or over MAX_SENDER_BYTES, a bad envelope id or timestamp.
    """
    if len(message) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message is larger than {MAX_MESSAGE_BYTES} bytes")
    sender_bytes = sender.encode("utf-8")
    if not 1 <= len(sender_bytes) <= MAX_SENDER_BYTES:
        raise ValueError(f"sender must be 1 to {MAX_SENDER_BYTES} bytes of UTF-8")
    if envelope_id is None:
        envelope_id = new_envelope_id()
    elif len(envelope_id) != ENVELOPE_ID_LEN:
        raise ValueError(f"envelope id must be {ENVELOPE_ID_LEN} bytes")
    if timestamp is None:
        timestamp = int(time.time())
    elif not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise ValueError("timestamp must fit in 64 unsigned bits")
    mailbox_id = recipient.mailbox_id

    signing = sender_keys.signing
    head = b"".join((
        _HEAD.pack(INNER_VERSION, len(sender_bytes)),
        sender_bytes,
        _MIDDLE.pack(bytes(signing.verify_key), timestamp, len(message)),
    ))
    digest = _signed_digest(envelope_id, mailbox_id, head, message)
    signature = signing.sign(SIGNATURE_CONTEXT + digest).signature

    unpadded = len(head) + len(message) + SIGNATURE_LEN
    bucket = padded_size(unpadded)
    padding = b"\x80" + bytes(bucket - SEAL_OVERHEAD - unpadded - 1)
    plaintext = b"".join((head, message, signature, padding))
    ciphertext = nacl.bindings.crypto_box_seal(plaintext, recipient.encryption_key)
    del plaintext
    outer = _OUTER.pack(MAGIC, envelope_id, mailbox_id, len(ciphertext))
    return b"".join((outer, ciphertext))


def open_envelope(data: bytes, recipient_keys: AccountKeys) -> OpenedEnvelope:
    """Open an envelope addressed to `recipient_keys`' mailbox and check its signature.

    Any failure raises `CannotOpen` ("cannot open envelope") and nothing else.
    """
    try:
        return _open(data, recipient_keys)
    except (
        CannotOpen, EnvelopeFormatError, nacl.exceptions.CryptoError,
        ValueError, TypeError, IndexError, struct.error,
    ):
        raise CannotOpen() from None


def _open(data: bytes, recipient_keys: AccountKeys) -> OpenedEnvelope:
    if len(data) < OUTER_HEADER_LEN:
        raise CannotOpen()
    magic, envelope_id, mailbox_id, length = _OUTER.unpack_from(data)
    # Checked before anything is allocated for the ciphertext.
    if magic != MAGIC or not is_bucket(length) or len(data) != OUTER_HEADER_LEN + length:
        raise CannotOpen()
    public = recipient_keys.public
    if mailbox_id != public.mailbox_id:
        raise CannotOpen()

    ciphertext = bytes(data[OUTER_HEADER_LEN:])  # no second copy when data is bytes
    plaintext = nacl.bindings.crypto_box_seal_open(
        ciphertext, public.encryption_key, bytes(recipient_keys.encryption)
    )
    del ciphertext
    version, sender_len = _HEAD.unpack_from(plaintext, 0)
    if version != INNER_VERSION or not 1 <= sender_len <= MAX_SENDER_BYTES:
        raise CannotOpen()
    sender_end = _HEAD.size + sender_len
    sender_key, timestamp, message_len = _MIDDLE.unpack_from(plaintext, sender_end)
    if message_len > MAX_MESSAGE_BYTES:
        raise CannotOpen()
    message_start = sender_end + _MIDDLE.size
    signed_end = message_start + message_len
    unpadded = signed_end + SIGNATURE_LEN
    # The padding is exactly one 0x80 byte then zeros, to the smallest bucket that fits.
    if unpadded >= len(plaintext) or padded_size(unpadded) != length:
        raise CannotOpen()
    if plaintext[unpadded] != _PAD_MARK:
        raise CannotOpen()
    if plaintext.count(0, unpadded + 1) != len(plaintext) - unpadded - 1:
        raise CannotOpen()

    view = memoryview(plaintext)
    digest = _signed_digest(envelope_id, mailbox_id, view[:signed_end])
    signature = plaintext[signed_end:unpadded]
    nacl.signing.VerifyKey(sender_key).verify(SIGNATURE_CONTEXT + digest, signature)
    sender = plaintext[_HEAD.size:sender_end].decode("utf-8")
    return OpenedEnvelope(
        envelope_id=envelope_id,
        mailbox_id=mailbox_id,
        sender=sender,
        sender_signing_key=sender_key,
        timestamp=timestamp,
        message=plaintext[message_start:signed_end],
    )
