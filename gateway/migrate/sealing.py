"""Sealing a migrated message to its account's public key, and opening it to file it.

The migration tool holds no secret of the account (the user's password is never
asked), so a message is sealed the moment it is read with a libsodium sealed box to
the account's X25519 encryption key, the key envelopes are sealed to. Not an
envelope (`bridge.envelope.seal`): that needs a sender's signing key and is padded
for relays that never see this; a sealed box is the same primitive, nothing more.

    sealed    = crypto_box_seal(MAGIC || binding(32) || message, encryption_key)
    binding   = BLAKE2b-256(person "sg-import-v1") over the target folder, flags,
                internal date (unix seconds), size and digest, each length-prefixed

The binding makes the clear columns of the import row (folder, flags, date, size)
part of what was sealed: a row whose columns were changed, or a sealed blob moved to
another row, does not open. A sealed box is anonymous, so it does not say who wrote
it; the gateway's database is where the tool writes and is trusted as its outbox is.

`digest` is keyed BLAKE2b of the message (CRLF line ends) under the account's
migration key. This module does no I/O and never logs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import datetime

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash

from bridge.keys import AccountKeys

MAGIC = b"SGI1"
_BINDING_PERSON = b"sg-import-v1".ljust(16, b"\0")
_DIGEST_PERSON = b"sg-import-dedup".ljust(16, b"\0")
_LENGTH = struct.Struct(">Q")
DIGEST_LEN = 32


class ImportCannotOpen(Exception):
    """A pending import does not open with the account's keys or its row was changed."""

    def __init__(self) -> None:
        super().__init__("cannot open imported message")


def crlf(message: bytes) -> bytes:
    """The message with CRLF line ends (mbox and Maildir files keep LF)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def digest(migration_key: bytes, message: bytes) -> bytes:
    return nacl.hash.blake2b(
        message, digest_size=DIGEST_LEN, key=migration_key, person=_DIGEST_PERSON,
        encoder=nacl.encoding.RawEncoder,
    )


def _binding(
    folder: str, flags: Iterable[str], internal_date: datetime, size: int, message_digest: bytes
) -> bytes:
    fields = (
        folder.encode("utf-8"),
        " ".join(sorted(flags)).encode("utf-8"),
        _LENGTH.pack(int(internal_date.timestamp())),
        _LENGTH.pack(size),
        message_digest,
    )
    return nacl.hash.blake2b(
        b"".join(_LENGTH.pack(len(part)) + part for part in fields),
        digest_size=32, person=_BINDING_PERSON, encoder=nacl.encoding.RawEncoder,
    )


def seal_import(
    encryption_key: bytes, message: bytes, *, folder: str, flags: Iterable[str],
    internal_date: datetime, message_digest: bytes,
) -> bytes:
    binding = _binding(folder, flags, internal_date, len(message), message_digest)
    return nacl.bindings.crypto_box_seal(MAGIC + binding + message, encryption_key)


def open_import(
    keys: AccountKeys, sealed: bytes, *, folder: str, flags: Iterable[str],
    internal_date: datetime, size: int, message_digest: bytes,
) -> bytes:
    """The message; `ImportCannotOpen` if no key generation opens it or the row's
    columns are not those it was sealed with."""
    for generation in keys.history():
        public = generation.public.encryption_key
        try:
            plain = nacl.bindings.crypto_box_seal_open(
                sealed, public, bytes(generation.encryption)
            )
        except (nacl.exceptions.CryptoError, ValueError):
            continue
        binding = _binding(folder, flags, internal_date, size, message_digest)
        head = MAGIC + binding
        if plain[: len(head)] != head or len(plain) - len(head) != size:
            raise ImportCannotOpen()
        return plain[len(head):]
    raise ImportCannotOpen()
