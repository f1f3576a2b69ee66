"""pgpy, imported with its known warnings silenced by message, and nothing else silenced.

pgpy 0.6.0 (its last release) warns on every import and on every signature check:

    CryptographyDeprecationWarning  TripleDES, Camellia, CFB "has been moved" (cryptography
                                    >= 43 keeps them under `decrepit`; pyproject bounds it)
    DeprecationWarning              `imghdr` is deprecated (removed in Python 3.13)
    UserWarning                     "TODO: ... not yet implemented/working" on verify

Each filter names the message and the category and, where the warning is attributed to
pgpy's own code, the module; any other warning, from pgpy or elsewhere, is still shown
(and is an error under the test suite, whose pyproject filters repeat these). Every
module of the gateway uses pgpy through this one, so the filters are in place before
pgpy's first import, at run time as under test. This module does no I/O.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# (category, message regex, module regex or "" for any)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (CryptographyDeprecationWarning, r"(TripleDES|Camellia|CFB) has been moved", r"pgpy\."),
    (DeprecationWarning, r"'imghdr' is deprecated", ""),
    (UserWarning, r"TODO: .* (not yet implemented|not yet working)", r"pgpy\."),
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
