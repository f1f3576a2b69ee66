"""Mail from an account to recipients outside the bubble: the outbox item for each.

`OutsideMail.admit` answers RCPT (`gateway.pgp.outside`); `OutsideMail.item` turns the
message as the gateway sanitized it for the bubble into what the smarthost is to
send to one outside recipient (PGP/MIME signed by the account's key and encrypted to
the recipient's, or the allowed plaintext), sealed as a smarthost job
(`gateway.pgp.smarthost`), with the sender's sealed note of the recipient and subject
(`gateway.undelivered`), so that a job given up after `delivery_give_up` gets the same
notice as an envelope for the bubble. Runs in the sealing worker thread like
`bridge.envelope.seal`.
Logs one line per plaintext message, without content or addresses.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import nacl.secret

from bridge.envelope import new_envelope_id
from bridge.keys import AccountKeys
from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.keys import PeerKey
from gateway.pgp.lib import pgpy
from gateway.pgp.mime import encrypt_message, plaintext_message
from gateway.pgp.outside import OutsidePolicy, OutsideRecipient
from gateway.pgp.smarthost import SMARTHOST, seal_job
from gateway.store.outbox import Item
from gateway.undelivered import seal_note

log = logging.getLogger(__name__)

_MAX_PARSED = 1024  # correspondents' parsed keys kept in memory


class OutsideMail:
    def __init__(self, policy: OutsidePolicy, keys: OpenPgpKeys, box: nacl.secret.Aead) -> None:
        self._policy = policy
        self._keys = keys
        self._box = box
        self._lock = threading.Lock()
        self._parsed: dict[bytes, Any] = {}

    def admit(self, address: str) -> OutsideRecipient | str:
        return self._policy.admit(address)

    def _recipient_key(self, peer: PeerKey) -> Any:
        with self._lock:
            key = self._parsed.get(peer.public)
        if key is None:
            key, _ = pgpy.PGPKey.from_blob(peer.public)
            with self._lock:
                if len(self._parsed) >= _MAX_PARSED:
                    self._parsed.clear()
                self._parsed[peer.public] = key
        return key

    def item(
        self, message: bytes, account: str, keys: AccountKeys, recipient: OutsideRecipient,
        subject: str,
    ) -> Item:
        signer = self._keys.own(account, keys)
        public = bytes(signer.pubkey)
        if recipient.key is None:
            outgoing = plaintext_message(message, sender=account, sender_public=public)
            log.warning("outside: a message is queued for the smarthost in clear "
                        "(allow_plaintext_to)")
        else:
            outgoing = encrypt_message(
                message, sender=account, signer=signer, sender_public=public,
                recipient=self._recipient_key(recipient.key),
            )
        job = seal_job(self._box, account, recipient.address, outgoing)
        envelope_id = new_envelope_id()
        note = seal_note(account, keys, envelope_id, recipient.address, subject)
        return envelope_id, job, (SMARTHOST,), note
