"""Sealing under an account's storage key: XChaCha20-Poly1305 with a random nonce.

    sealed = nonce(24, random) || XChaCha20-Poly1305(storage_key, plaintext, ad)

`seal` and `open_sealed` are the one framing; each kind of blob has its own associated
data, so none opens in another's place: a message and its header block
(`gateway.store.mailbox` documents both) and a block of the header cache
(`gateway.store.header_cache`). A blob that does not open gives None, never the reason.
This module does no I/O.

`seal` has libsodium write the ciphertext straight into the blob after the nonce, so
sealing holds the plaintext and the blob and nothing else: PyNaCl's `encrypt` returns
the ciphertext, and putting the nonce before it copied it again (a 40 MB APPEND peaked
at three copies of the message). The blob is a bytearray, which both databases' drivers
take as it is.
"""

from __future__ import annotations

import struct

import nacl.bindings
import nacl.exceptions
import nacl.utils
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]  # PyNaCl's cffi module

from gateway.imap.backend import header_block

SEAL_ID_LEN = 16
NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_AD_PREFIX = b"sealgate-store-v1\0"
_HEADER_AD_PREFIX = b"sealgate-store-header-v1\0"
_AD_NUMBERS = struct.Struct(">Q")


def _associated_data(account_id: int, seal_id: bytes, size: int) -> bytes:
    return _AD_PREFIX + _AD_NUMBERS.pack(account_id) + seal_id + _AD_NUMBERS.pack(size)


def _header_associated_data(account_id: int, seal_id: bytes, size: int, length: int) -> bytes:
    return (
        _HEADER_AD_PREFIX
        + _AD_NUMBERS.pack(account_id)
        + seal_id
        + _AD_NUMBERS.pack(size)
        + _AD_NUMBERS.pack(length)
    )


def seal(storage_key: bytes, plaintext: bytes, ad: bytes) -> bytearray:
    """nonce || XChaCha20-Poly1305(storage_key, plaintext, ad), written in place."""
    if len(storage_key) != nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES:
        raise ValueError("a storage key is 32 octets")
    return seal_after(b"", storage_key, plaintext, ad)


def seal_after(prefix: bytes, key: bytes, plaintext: bytes, ad: bytes) -> bytearray:
    """prefix || nonce(24, random) || XChaCha20-Poly1305(key, plaintext, ad): one
    allocation, libsodium writing the ciphertext into it (also `gateway.migrate.sealing`)."""
    nonce = nacl.utils.random(NONCE_LEN)
    start = len(prefix) + NONCE_LEN
    sealed = bytearray(start + len(plaintext) + TAG_LEN)
    sealed[:start] = prefix + nonce
    length = ffi.new("unsigned long long *")
    failed = lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        ffi.from_buffer(sealed) + start, length, plaintext, len(plaintext), ad, len(ad),
        ffi.NULL, nonce, key,
    )
    if failed or length[0] != len(plaintext) + TAG_LEN:
        raise RuntimeError("libsodium refused to seal")  # never seen: the lengths are ours
    return sealed


def open_sealed(storage_key: bytes, sealed: bytes, ad: bytes) -> bytes | None:
    if len(sealed) < NONCE_LEN:
        return None
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[NONCE_LEN:], ad, sealed[:NONCE_LEN], storage_key
        )
    except nacl.exceptions.CryptoError:
        return None


def seal_message(
    storage_key: bytes, account_id: int, seal_id: bytes, message: bytes
) -> bytearray:
    return seal(storage_key, message, _associated_data(account_id, seal_id, len(message)))


def open_message(
    storage_key: bytes, account_id: int, seal_id: bytes, size: int, sealed: bytes
) -> bytes | None:
    """The message, or None if the blob does not open under this key and binding."""
    return open_sealed(storage_key, sealed, _associated_data(account_id, seal_id, size))


def seal_header(
    storage_key: bytes, account_id: int, seal_id: bytes, message: bytes
) -> bytearray:
    """The message's header block (`header_block`), sealed as the message's header part."""
    header = header_block(message)
    ad = _header_associated_data(account_id, seal_id, len(message), len(header))
    return seal(storage_key, header, ad)


def open_header(
    storage_key: bytes, account_id: int, seal_id: bytes, size: int, sealed: bytes
) -> bytes | None:
    """The header block, or None if the blob does not open under this key and binding."""
    # The header's length is bound too, and the ciphertext gives it away: nonce || c || tag.
    length = len(sealed) - NONCE_LEN - TAG_LEN
    if length < 0:
        return None
    ad = _header_associated_data(account_id, seal_id, size, length)
    return open_sealed(storage_key, sealed, ad)
