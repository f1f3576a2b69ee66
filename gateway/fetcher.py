"""The fetcher: moves envelopes of unlocked accounts from relays into the store.

For each envelope listed by a home relay: skip it if this account has seen its id
(duplicates from several relays or from a crash before the ack), otherwise fetch,
open in memory, check the sender's signing key against the signed directory, and
commit it to INBOX re-sealed under the account's storage key. Only after that
commit is the envelope acknowledged (deleted) on the relay. An envelope that does
not open or whose sender does not verify is kept out of the mailbox, recorded and
acknowledged, and reported by a notice in INBOX; its content is never logged.
Notices fold: one per claimed sender (a directory member whose key did not match)
per `notice_fold_seconds`, and one per account per window for envelopes whose
sender is unknown (they do not open, or claim an address outside the directory,
which a forger can vary at will), so a flood of bad envelopes makes few notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import nacl.encoding
import nacl.hash

from bridge.envelope import open_envelope
from bridge.errors import CannotOpen, RelayError
from bridge.keys import AccountKeys
from bridge.relay.client import RelayClient
from gateway.keyring import KeyRing
from gateway.notices import cannot_open_notice
from gateway.recipients import DirectoryUnavailable, Recipients, UnknownAddress
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

_FOLD_PERSON = b"sg-notice-fold".ljust(16, b"\0")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Fetcher(PeriodicJob):
    def __init__(
        self,
        *,
        accounts: AccountStore,
        keyring: KeyRing,
        mailboxes: MailboxStore,
        recipients: Recipients,
        client_for: Callable[[str], RelayClient],
        domain: str,
        poll_interval: float,
        notice_fold_seconds: float = 3600.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(poll_interval)
        self._fold_seconds = notice_fold_seconds
        self._clock = clock
        self._accounts = accounts
        self._keyring = keyring
        self._mailboxes = mailboxes
        self._recipients = recipients
        self._client_for = client_for
        self._domain = domain

    async def run_once(self) -> bool:
        await self.fetch_all()
        return False

    async def fetch_all(self) -> int:
        """One pass over every unlocked account; returns messages delivered."""
        delivered = 0
        for address, keys in self._keyring.unlocked().items():
            account = self._accounts.get(address)
            if account is None:
                continue
            for url in account.relays:
                try:
                    delivered += await self._fetch_from(self._client_for(url), address, keys)
                except RelayError as e:
                    log.info("fetch: relay %s unavailable (%s)", url, type(e).__name__)
        return delivered

    async def _fetch_from(self, relay: RelayClient, address: str, keys: AccountKeys) -> int:
        delivered = 0
        for info in await relay.list(keys.mailbox):
            if self._mailboxes.seen_envelope(address, info.envelope_id):
                await relay.ack(keys.mailbox, info.envelope_id)
                continue
            data = await relay.fetch(keys.mailbox, info.envelope_id)
            try:
                outcome = await self._accept(address, keys, info.envelope_id, data)
            except DirectoryUnavailable:
                continue  # sender cannot be checked now; leave it on the relay
            if outcome:
                delivered += 1
            await relay.ack(keys.mailbox, info.envelope_id)
        return delivered

    async def _accept(
        self, address: str, keys: AccountKeys, envelope_id: bytes, data: bytes
    ) -> bool:
        """Store the envelope's message, or a notice; True if a message was delivered."""
        now = self._clock()
        try:
            opened = open_envelope(data, keys)
            if opened.envelope_id != envelope_id:
                raise CannotOpen()
        except CannotOpen:
            await self._reject(address, keys, envelope_id, "cannot-open", now)
            return False
        try:
            sender = await self._recipients.resolve(opened.sender)
        except UnknownAddress:
            await self._reject(address, keys, envelope_id, "unknown-sender", now)
            return False
        if sender.keys.signing_key != opened.sender_signing_key:
            await self._reject(address, keys, envelope_id, "sender-mismatch", now, opened.sender)
            return False
        uid = await asyncio.to_thread(
            self._mailboxes.deliver,
            address,
            keys,
            "INBOX",
            opened.message,
            internal_date=now,
            envelope_id=envelope_id,
        )
        if uid is not None:
            log.info("fetch: envelope %s delivered", envelope_id.hex()[:8])
        return uid is not None

    async def _reject(
        self,
        address: str,
        keys: AccountKeys,
        envelope_id: bytes,
        reason: str,
        now: datetime,
        sender: str | None = None,
    ) -> None:
        """Record the refused envelope, and put a notice in INBOX unless this window has one.

        Notices fold per claimed `sender` (a directory member), or per account without one.
        """
        log.warning("fetch: envelope %s rejected: %s", envelope_id.hex()[:8], reason)
        fold_key = b"" if sender is None else nacl.hash.blake2b(
            sender.encode("utf-8"), digest_size=16, key=keys.storage_key,
            person=_FOLD_PERSON, encoder=nacl.encoding.RawEncoder,
        )
        window = int(now.timestamp() // self._fold_seconds)
        if not await asyncio.to_thread(
            self._mailboxes.record_rejected, address, envelope_id, fold_key, window
        ):
            return  # already reported, or folded into this window's notice
        notice = cannot_open_notice(
            account=address,
            domain=self._domain,
            envelope_id=envelope_id,
            reason=reason,
            when=now,
            fold_seconds=self._fold_seconds,
        )
        await asyncio.to_thread(
            self._mailboxes.deliver,
            address,
            keys,
            "INBOX",
            notice,
            internal_date=now,
        )
