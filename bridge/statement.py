"""Root-signed statements carried as directory records (relay drains, published keys).

A statement is a small JSON object the bubble's root signs, filed under a lookup id
keyed with the directory key and a personalisation of its own, so relays store and
serve it as any address record and cannot tell it apart nor learn what it is about:

    lookup_id = BLAKE2b(key = directory key, person = PERSON, subject)
    sealed    = nonce(24) || XChaCha20-Poly1305(directory key, nonce, JSON body, ad=lookup_id)
    record    = lookup_id, version, sealed, Ed25519(root, RECORD_CONTEXT || ...)

`open_statement` returns the body only when the root signed the record and it opens
under the directory key; the caller checks the body names the subject it looked up.
This module does no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from bridge.directory import RECORD_CONTEXT, DirectoryRecord
from bridge.errors import DirectoryError
from bridge.keys import RootKey

_NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def statement_lookup_id(directory_key: bytes, person: bytes, subject: str) -> bytes:
    return nacl.hash.blake2b(
        subject.encode("utf-8"), key=directory_key, person=person.ljust(16, b"\0"),
        digest_size=32, encoder=nacl.encoding.RawEncoder,
    )


def seal_statement(
    body: dict[str, Any], lookup_id: bytes, version: int, root: RootKey, directory_key: bytes
) -> DirectoryRecord:
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    nonce = nacl.utils.random(_NONCE_LEN)
    sealed = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        data, lookup_id, nonce, directory_key
    )
    unsigned = DirectoryRecord(lookup_id, version, sealed, b"")
    return DirectoryRecord(
        lookup_id, version, sealed, root.sign(RECORD_CONTEXT, unsigned.publisher_message())
    )


def unseal_statement(record: DirectoryRecord, directory_key: bytes, max_bytes: int) -> object:
    """The JSON body of `record`, not yet verified; DirectoryError if it does not open."""
    if not _NONCE_LEN < len(record.sealed) <= max_bytes:
        raise DirectoryError("malformed statement")
    try:
        body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            record.sealed[_NONCE_LEN:], record.lookup_id, record.sealed[:_NONCE_LEN],
            directory_key,
        )
        return json.loads(body)
    except (nacl.exceptions.CryptoError, ValueError, RecursionError):
        raise DirectoryError("malformed statement") from None


def open_statement(
    record: DirectoryRecord, directory_key: bytes, trusted_roots: tuple[bytes, ...],
    max_bytes: int,
) -> object:
    """The JSON body of a root-signed `record`; DirectoryError if unsigned or unreadable."""
    record.verify_publisher(trusted_roots)
    return unseal_statement(record, directory_key, max_bytes)
