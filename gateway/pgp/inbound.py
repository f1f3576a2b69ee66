"""Mail from outside encrypted to an account's OpenPGP key: opened as the fetcher files it.

The fetcher runs only for unlocked accounts, so the account's OpenPGP key can be
opened there; the readable message is then sealed into the store under the account's
storage key like any other, and opened in memory at each IMAP read. Decrypting once,
before the seal, rather than at every read keeps what IMAP serves stable (size,
BODYSTRUCTURE, SEARCH all see one message) and costs pgpy once per message; the
store never holds the plaintext unsealed either way. The signature is checked against
the key the gateway holds for the outer From address (`sealgate pgp import`), if any.
A `Sealgate-OpenPGP` field that came with a message from outside is removed from every
such message, encrypted or not: only this gateway says what it decrypted.
When the account's key cannot be had (it does not open, the store fails), the message is
filed as it came, ciphertext, and a warning names the error's type: the account's other
mail is not held back behind it.
Never logs content or addresses.
"""

from __future__ import annotations

import logging

from bridge.errors import CannotOpen
from bridge.headers import parse_addresses, parse_header
from bridge.keys import AccountKeys
from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.lib import PGPError, pgpy
from gateway.pgp.mime import decrypt_message, is_pgp_mime, without_status
from gateway.store.db import StoreError

log = logging.getLogger(__name__)


class InboundDecryption:
    def __init__(self, keys: OpenPgpKeys) -> None:
        self._keys = keys

    def open(self, address: str, keys: AccountKeys, message: bytes) -> bytes:
        """`message` decrypted if it is PGP/MIME to the account's key, else unchanged; in
        both cases without a `Sealgate-OpenPGP` field a sender outside may have written."""
        header = parse_header(message, limit=None)
        message = without_status(message, header)
        header = parse_header(message, limit=None)
        if not is_pgp_mime(header):
            return message
        try:
            own = self._keys.own(address, keys)
            peers = []
            author = header.first("from")
            if author is not None:
                for mailbox in parse_addresses(author.text, strict=False).mailboxes[:1]:
                    peer = self._keys.peer(mailbox.address)
                    if peer is not None:
                        peers.append(pgpy.PGPKey.from_blob(peer.public)[0])
        except (CannotOpen, StoreError, PGPError, ValueError) as e:
            # Stored as it came (ciphertext): better than holding the account's mail back.
            log.warning("openpgp: a message from outside was not decrypted (%s)",
                        type(e).__name__)
            return message
        return decrypt_message(message, [own], peers)
