"""Sealing a migrated message to its account's public key, and opening it to file it.

The migration tool holds no secret of the account (the user's password is never
asked), so a message is sealed the moment it is read to the account's X25519
encryption key, the key envelopes are sealed to. Not an envelope
(`bridge.envelope.seal`): that needs a sender's signing key and is padded for relays
that never see this. An `ImportSealer` makes a fresh X25519 key pair for one batch
and forgets its secret half when the batch is sealed; each message of the batch is

    sealed    = MAGIC || sender(32) || nonce(24) || XChaCha20-Poly1305(key, nonce,
                message, aad = MAGIC || sender || binding)
    key       = BLAKE2b-256(person "sg-import-key") of the X25519/HSalsa20 shared key of
                the sender's secret and the account's public key (`nacl.public.Box`)
    binding   = BLAKE2b-256(person "sg-import-v1") over the target folder, flags,
                internal date (unix seconds), size and digest, each length-prefixed

A sealed box per message (the first format, `MAGIC_V1`, still opened) costs an X25519
operation for each, about as much as all the rest of the migration's sealing; one
per batch gives the same secrecy, as the sender's secret lives only while its
batch is sealed. The binding makes the clear columns of the import row (folder,
flags, date, size) part of what was sealed: a row whose columns were changed, or a
sealed blob moved to another row, does not open. The sender key is anonymous, so it
does not say who wrote it; the gateway's database is where the tool writes and is
trusted as its outbox is.

`digest` is keyed BLAKE2b of the message (CRLF line ends) under the account's
migration key. This module does no I/O and never logs.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from datetime import datetime

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret

from bridge.keys import AccountKeys
from gateway.store.sealing import seal_after

MAGIC = b"SGI2"
MAGIC_V1 = b"SGI1"  # inside a sealed box: MAGIC_V1 || binding || message
_SENDER_LEN = 32
_KEY_PERSON = b"sg-import-key".ljust(16, b"\0")
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
    if message.count(b"\n") == message.count(b"\r\n"):
        return message  # CRLF already, as IMAP sends it: counting is cheaper than copying
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def digest(migration_key: bytes, message: bytes) -> bytes:
    # hashlib's BLAKE2b is libsodium's (same parameters, same output) at less cost a call.
    return hashlib.blake2b(
        message, digest_size=DIGEST_LEN, key=migration_key, person=_DIGEST_PERSON
    ).digest()


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
    return hashlib.blake2b(
        b"".join(_LENGTH.pack(len(part)) + part for part in fields),
        digest_size=32, person=_BINDING_PERSON,
    ).digest()


def _message_key_bytes(box: nacl.public.Box) -> bytes:
    return hashlib.blake2b(box.shared_key(), digest_size=32, person=_KEY_PERSON).digest()


def _message_key(box: nacl.public.Box) -> nacl.secret.Aead:
    return nacl.secret.Aead(_message_key_bytes(box))


class ImportSealer:
    """Seals the messages of one batch to `encryption_key` under one fresh sender key.

    `seal` is `head || Aead(key).encrypt(message, aad)` (nonce || ciphertext), with
    libsodium writing the ciphertext straight into the result (`seal_after`): PyNaCl's
    `encrypt` would copy a message's octets three times more, a fifth of the sealing's
    cost."""

    def __init__(self, encryption_key: bytes) -> None:
        sender = nacl.public.PrivateKey.generate()
        self._head = MAGIC + bytes(sender.public_key)
        self._key = _message_key_bytes(
            nacl.public.Box(sender, nacl.public.PublicKey(encryption_key)))

    def seal(
        self, message: bytes, *, folder: str, flags: Iterable[str], internal_date: datetime,
        message_digest: bytes,
    ) -> bytearray:
        aad = self._head + _binding(folder, flags, internal_date, len(message), message_digest)
        return seal_after(self._head, self._key, message, aad)  # SQLite takes a bytearray


def seal_import(
    encryption_key: bytes, message: bytes, *, folder: str, flags: Iterable[str],
    internal_date: datetime, message_digest: bytes,
) -> bytes:
    """One message sealed on its own (a batch of one)."""
    return bytes(ImportSealer(encryption_key).seal(
        message, folder=folder, flags=flags, internal_date=internal_date,
        message_digest=message_digest,
    ))


def open_import(
    keys: AccountKeys, sealed: bytes | bytearray, *, folder: str, flags: Iterable[str],
    internal_date: datetime, size: int, message_digest: bytes,
) -> bytes:
    """The message; `ImportCannotOpen` if no key generation opens it or the row's
    columns are not those it was sealed with."""
    sealed = bytes(sealed)  # as `seal` made it, or as the store gives it back
    binding = _binding(folder, flags, internal_date, size, message_digest)
    head = sealed[: len(MAGIC) + _SENDER_LEN]
    if head[: len(MAGIC)] == MAGIC and len(head) == len(MAGIC) + _SENDER_LEN:
        sender = nacl.public.PublicKey(head[len(MAGIC):])
        for generation in keys.history():
            try:
                plain = _message_key(nacl.public.Box(generation.encryption, sender)).decrypt(
                    sealed[len(head):], head + binding)
            except (nacl.exceptions.CryptoError, ValueError):
                continue
            if len(plain) != size:
                raise ImportCannotOpen()
            return plain
    # The first format: a sealed box, whose first octets are random (rarely "SGI2").
    return _open_v1(keys, sealed, binding, size)


def _open_v1(keys: AccountKeys, sealed: bytes, binding: bytes, size: int) -> bytes:
    for generation in keys.history():
        public = generation.public.encryption_key
        try:
            plain = nacl.bindings.crypto_box_seal_open(
                sealed, public, bytes(generation.encryption)
            )
        except (nacl.exceptions.CryptoError, ValueError):
            continue
        head = MAGIC_V1 + binding
        if plain[: len(head)] != head or len(plain) - len(head) != size:
            raise ImportCannotOpen()
        return plain[len(head):]
    raise ImportCannotOpen()
