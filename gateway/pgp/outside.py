"""RCPT for a recipient outside the bubble on the submission listener: who may be written to.

A recipient outside is accepted when the gateway has a smarthost and either holds the
recipient's OpenPGP key (`sealgate pgp import`) or the recipient's domain is in
`allow_plaintext_to` (off by default). Otherwise RCPT is refused with `550 5.7.1` and a
sentence saying who, why, and what to do. Pure policy: no I/O but the key look-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.keys import PeerKey


@dataclass(frozen=True)
class OutsideRecipient:
    address: str
    key: PeerKey | None  # None: in clear, to a domain the operator allows it to


class OutsidePolicy:
    def __init__(
        self, keys: OpenPgpKeys, *, smarthost: bool, allow_plaintext_to: tuple[str, ...] = ()
    ) -> None:
        self._keys = keys
        self._smarthost = smarthost
        self._plaintext = {d.strip().lower().rstrip(".") for d in allow_plaintext_to}

    def admit(self, address: str) -> OutsideRecipient | str:
        """The recipient to send to, or the RCPT reply refusing it (`address` normalized)."""
        if not self._smarthost:
            return (f"550 5.7.1 {address} is outside the bubble, and this gateway sends no "
                    "mail outside it (no smarthost is set up); ask your administrator")
        key = self._keys.peer(address)
        if key is not None:
            problem = self._keys.problem(key)
            if problem is None:
                return OutsideRecipient(address, key)
            return (f"550 5.7.1 the OpenPGP key this gateway holds for {address} {problem}, "
                    "so the message cannot leave encrypted; ask the recipient for a current "
                    "key and your administrator to import it (sealgate pgp import)")
        if address.rpartition("@")[2] in self._plaintext:
            return OutsideRecipient(address, None)
        return (f"550 5.7.1 {address} is outside the bubble and this gateway has no "
                "OpenPGP key for it, so the message cannot leave encrypted; ask the "
                "recipient for their public key and your administrator to import it "
                "(sealgate pgp import), then send again")
