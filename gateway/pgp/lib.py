"""pgpy, imported with its known warnings silenced by message, and nothing else silenced.

pgpy 0.6.0 (its last release) warns on every import and on every signature check:

    CryptographyDeprecationWarning  TripleDES, Camellia, CFB "has been moved" (cryptography
                                    >= 43 keeps them under `decrepit`; pyproject bounds it)
    DeprecationWarning              `imghdr` is deprecated (removed in Python 3.13)
    UserWarning                     "TODO: ... not yet implemented/working" on verify;
                                    "Selected symmetric algorithm not in key preferences"
                                    when the gateway picks AES over what a key lists

Each filter names the message, the category and the module the warning is attributed
to (pgpy's own; gateway.pgp for the one pgpy attributes to its caller); any other
warning, from pgpy or elsewhere, is still shown (and is an error under the test suite,
whose pyproject filters repeat these). Every module of the gateway uses pgpy through
this one, so the filters are in place before pgpy's first import, at run time as under
test.

pgpy decompresses a compressed packet whole (zlib, bz2): a message from outside of a
few MB could expand a thousandfold. `CompressionAlgorithm.decompress` is replaced by
one that stops at `MAX_DECOMPRESSED` bytes and raises ValueError beyond.
This module does no I/O.
"""

from __future__ import annotations

import bz2
import warnings
import zlib

from cryptography.utils import CryptographyDeprecationWarning

# (category, message regex, regex of the module the warning is attributed to)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (CryptographyDeprecationWarning, r"(TripleDES|Camellia|CFB) has been moved", r"pgpy\."),
    (DeprecationWarning, r"'imghdr' is deprecated", r"pgpy\."),
    (UserWarning, r"TODO: .* (not yet implemented|not yet working)", r"pgpy\."),
    # gateway.pgp.mime encrypts with AES on purpose when a key lists only older ciphers
    (UserWarning, r"Selected symmetric algorithm not in key preferences", r"gateway\.pgp\."),
)


def quiet_known_warnings() -> None:
    """Install the filters (idempotent: `warnings` drops a filter it already holds)."""
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


quiet_known_warnings()

import pgpy  # noqa: E402 - after the filters, on purpose
from pgpy.constants import (  # noqa: E402
    CompressionAlgorithm,
    EllipticCurveOID,
    HashAlgorithm,
    KeyFlags,
    PubKeyAlgorithm,
    SymmetricKeyAlgorithm,
)
from pgpy.errors import PGPError  # noqa: E402

MAX_DECOMPRESSED = 64 * 1024 * 1024  # the most a compressed OpenPGP packet may expand to


def _bounded_decompress(self: CompressionAlgorithm, data: bytes) -> bytes:
    if self is CompressionAlgorithm.Uncompressed:
        return data
    decompressor: zlib._Decompress | bz2.BZ2Decompressor
    if self is CompressionAlgorithm.ZIP:
        decompressor = zlib.decompressobj(-15)
    elif self is CompressionAlgorithm.ZLIB:
        decompressor = zlib.decompressobj()
    elif self is CompressionAlgorithm.BZ2:
        decompressor = bz2.BZ2Decompressor()
    else:
        raise NotImplementedError(self)
    out = decompressor.decompress(bytes(data), MAX_DECOMPRESSED + 1)
    if len(out) > MAX_DECOMPRESSED:
        raise ValueError("compressed OpenPGP data expands beyond the limit")
    return out


CompressionAlgorithm.decompress = _bounded_decompress

__all__ = [
    "CompressionAlgorithm",
    "EllipticCurveOID",
    "HashAlgorithm",
    "KeyFlags",
    "PGPError",
    "PubKeyAlgorithm",
    "SymmetricKeyAlgorithm",
    "pgpy",
]
