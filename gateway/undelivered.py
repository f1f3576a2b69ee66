"""Telling a sender that a relay removed their message before it was delivered.

When the sender's gateway seals a message, it keeps per envelope a note of the
recipient's address and the subject, sealed under a key derived from the sender's
storage key (`seal_note`), so neither is ever on its disk in clear. Once a relay has
taken the envelope, `UndeliveredChecker` asks that relay every `check_interval`
seconds what became of it (`GET /v1/envelopes/{id}/status`, signed with this gateway's
credential): `delivered` forgets it, `pending` asks again later, `purged` or `expired`
keep it for a notice, `unknown` for longer than `forget_after` forgets it.

An envelope no relay has taken yet (a deposit failed at least once) whose recipient
has since been revoked in the directory is given up at once (`Outbox.give_up`), and
so is one the delivery worker gave up on after `delivery_give_up` (a smarthost job
for a recipient outside the bubble too): all get the same notice, with the reason.
Finding the recipient needs the sender's note opened.

Asking needs no account key, so it runs whether the sender is logged in or not; but
writing the notice does (the note opens, and the INBOX is sealed, under the account's
keys, which exist only in memory while it is unlocked). So lost envelopes wait, sealed,
until their account is unlocked; each pass writes the notices of every unlocked account
that has some. The notice names the recipient and subject from the sender's own note,
never anything a relay said but the outcome and its hour. Nothing here logs an address
or a subject.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret
import nacl.utils

from bridge.errors import RelayError
from bridge.headers import HeaderBlock, decoded_text
from bridge.keys import AccountKeys, GatewayCredential
from bridge.relay.client import RelayClient
from gateway.keyring import KeyRing
from gateway.notices import undelivered_notice
from gateway.recipients import Recipients, RevokedAddress, UnknownAddress
from gateway.smtp.policy import address_domain
from gateway.store.mailbox import MailboxStore
from gateway.store.outbox import Outbox, SentNote
from gateway.store.sent import LOST_OUTCOMES, SentLog
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

_NOTE_PERSON = b"sg-sent-note"
CHECK_BATCH = 500  # envelopes asked about per pass


# Derived once per unlocked account (every envelope's note uses it), and forgotten
# with the account's keys: keyed by the AccountKeys object, held weakly.
_NOTE_KEYS: weakref.WeakKeyDictionary[AccountKeys, nacl.secret.Aead] = (
    weakref.WeakKeyDictionary()
)


def _note_key(keys: AccountKeys) -> nacl.secret.Aead:
    aead = _NOTE_KEYS.get(keys)
    if aead is None:
        key = nacl.hash.blake2b(
            b"", key=keys.storage_key, person=_NOTE_PERSON, digest_size=32,
            encoder=nacl.encoding.RawEncoder,
        )
        aead = _NOTE_KEYS[keys] = nacl.secret.Aead(key)
    return aead


def seal_note(
    account: str, keys: AccountKeys, envelope_id: bytes, recipient: str, subject: str
) -> SentNote:
    """The sender's sealed record of one envelope (bound to its envelope id)."""
    plain = json.dumps({"to": recipient, "subject": subject}).encode("utf-8")
    return SentNote(account, bytes(_note_key(keys).encrypt(plain, envelope_id)))


def subject_of(header: HeaderBlock) -> str:
    """The Subject a sender wrote (encoded words decoded), or "" without one."""
    field = header.first("subject")
    return "" if field is None else decoded_text(field.text)


def open_note(keys: AccountKeys, envelope_id: bytes, sealed: bytes) -> tuple[str, str] | None:
    """(recipient, subject), or None if the note does not open with these keys."""
    try:
        data = json.loads(_note_key(keys).decrypt(sealed, envelope_id))
        return str(data["to"]), str(data["subject"])
    except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError):
        return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UndeliveredChecker(PeriodicJob):
    def __init__(
        self,
        *,
        sent: SentLog,
        keyring: KeyRing,
        mailboxes: MailboxStore,
        credential: GatewayCredential,
        client_for: Callable[[str], RelayClient],
        domain: str,
        interval: float,
        check_interval: float,
        forget_after: float,
        recipients: Recipients,
        outbox: Outbox,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(interval)
        self._recipients = recipients
        self._outbox = outbox
        self._sent = sent
        self._keyring = keyring
        self._mailboxes = mailboxes
        self._credential = credential
        self._client_for = client_for
        self._domain = domain
        self._check_interval = timedelta(seconds=check_interval)
        self._forget_after = timedelta(seconds=forget_after)
        self._clock = clock

    async def run_once(self) -> bool:
        more = await self.check_due()
        await self.give_up_revoked()
        await self.notify_unlocked()
        return more

    async def give_up_revoked(self) -> int:
        """Give up the undeposited envelopes of unlocked accounts whose recipient the
        directory now revokes; returns how many."""
        given_up = 0
        for address, keys in self._keyring.unlocked().items():
            for waiting in await asyncio.to_thread(
                self._sent.undeposited_for, address, CHECK_BATCH
            ):
                opened = open_note(keys, waiting.envelope_id, waiting.note)
                if opened is None or address_domain(opened[0]) != self._domain:
                    continue  # outside the bubble (a smarthost job): no directory entry
                try:
                    await self._recipients.resolve(opened[0])
                except RevokedAddress:
                    pass
                except UnknownAddress:
                    continue  # gone from the directory: the relays decide, as before
                else:
                    continue
                if await asyncio.to_thread(
                    self._outbox.give_up, waiting.envelope_id, "revoked", self._clock()
                ):
                    log.warning("undelivered: envelope %s given up, its recipient is revoked",
                                waiting.envelope_id.hex()[:8])
                    given_up += 1
        return given_up

    async def check_due(self) -> bool:
        """Ask relays about the envelopes due; True if a full batch was due."""
        now = self._clock()
        due = await asyncio.to_thread(self._sent.due, now, CHECK_BATCH)
        for check in due:
            try:
                answer = await self._client_for(check.relay).envelope_status(
                    check.envelope_id, self._credential
                )
            except RelayError as e:
                log.info("undelivered: relay unavailable for a status (%s)", type(e).__name__)
                await asyncio.to_thread(
                    self._sent.check_later, check.envelope_id, now + self._check_interval
                )
                continue
            if answer.status == "delivered" or (
                answer.status == "unknown" and now - check.created_at > self._forget_after
            ):
                await asyncio.to_thread(self._sent.forget, check.envelope_id)
            elif answer.status in LOST_OUTCOMES:
                log.warning("undelivered: envelope %s %s by its relay",
                            check.envelope_id.hex()[:8], answer.status)
                await asyncio.to_thread(
                    self._sent.lost, check.envelope_id, answer.status, answer.hour
                )
            else:
                await asyncio.to_thread(
                    self._sent.check_later, check.envelope_id, now + self._check_interval
                )
        return len(due) == CHECK_BATCH

    async def notify_unlocked(self) -> int:
        """Put a notice in INBOX for each lost envelope of an unlocked account."""
        told = 0
        for address, keys in self._keyring.unlocked().items():
            for lost in await asyncio.to_thread(self._sent.lost_for, address):
                opened = open_note(keys, lost.envelope_id, lost.note)
                if opened is None:
                    continue  # sealed under other keys; stays until they are unlocked
                recipient, subject = opened
                now = self._clock()
                notice = undelivered_notice(
                    account=address,
                    domain=self._domain,
                    envelope_id=lost.envelope_id,
                    recipient=recipient,
                    subject=subject,
                    sent=lost.created_at,
                    removed=None if lost.outcome_hour is None
                    else datetime.fromtimestamp(lost.outcome_hour, UTC),  # or given up
                    reason=lost.outcome,
                    when=now,
                )
                await asyncio.to_thread(
                    self._mailboxes.deliver, address, keys, "INBOX", notice, internal_date=now
                )
                await asyncio.to_thread(self._sent.forget, lost.envelope_id)
                told += 1
        return told
