"""RCPT for a recipient outside the bubble on the submission listener: who may be written to.

A recipient outside is accepted when the gateway has a smarthost and either has the
recipient's OpenPGP key or the recipient's domain is in `allow_plaintext_to` (off by
default). The key imported on this gateway (`sealgate pgp import`) comes first, else the
one the bubble's directory publishes (`sealgate pgp publish`, `gateway.pgp.directory`).
Otherwise RCPT is refused with `550 5.7.1` and a sentence saying who, why, and what to
do. Pure policy: no I/O but the key look-ups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.keys import PeerKey


@dataclass(frozen=True)
class OutsideRecipient:
    address: str
    key: PeerKey | None  # None: in clear, to a domain the operator allows it to


class OutsidePolicy:
    def __init__(
        self, keys: OpenPgpKeys, *, smarthost: bool, allow_plaintext_to: tuple[str, ...] = (),
        published: Callable[[str], PeerKey | None] = lambda address: None,
    ) -> None:
        self._keys = keys
        self._published = published
        self._smarthost = smarthost
        self._plaintext = {d.strip().lower().rstrip(".") for d in allow_plaintext_to}

    def admit(self, address: str) -> OutsideRecipient | str:
        """The recipient to send to, or the RCPT reply refusing it (`address` normalized)."""
        if not self._smarthost:
            return (f"550 5.7.1 {address} is outside the bubble, and this gateway sends no "
                    "mail outside it (no smarthost is set up); ask your administrator")
        key, holder = self._keys.peer(address), "this gateway holds"
        if key is None:
            key, holder = self._published(address), "the bubble directory publishes"
        if key is not None:
            problem = self._keys.problem(key)
            if problem is None:
                return OutsideRecipient(address, key)
            return (f"550 5.7.1 the OpenPGP key {holder} for {address} {problem}, "
                    "so the message cannot leave encrypted; ask the recipient for a current "
                    "key and your administrator to import it (sealgate pgp import) or "
                    "publish it (sealgate pgp publish)")
        if address.rpartition("@")[2] in self._plaintext:
            return OutsideRecipient(address, None)
        return (f"550 5.7.1 {address} is outside the bubble and this gateway has no "
                "OpenPGP key for it, so the message cannot leave encrypted; ask the "
                "recipient for their public key and your administrator to import it "
                "(sealgate pgp import) or publish it (sealgate pgp publish), then send again")
