"""The fetcher: moves envelopes of unlocked accounts from relays into the store.

For each envelope listed by a home relay: skip it if this account has seen its id
(duplicates from several relays or from a crash before the ack), otherwise fetch,
open in memory (with the account's current keys or an earlier generation's), check
the sender's signing key against the signed directory (its current key, or one it
had before a rotation; a revoked key or address is refused), and
commit it to INBOX re-sealed under the account's storage key. Only after that
commit is the envelope acknowledged (deleted) on the relay. An envelope that does
not open or whose sender does not verify is kept out of the mailbox, recorded and
acknowledged, and reported by a notice in INBOX; so is one whose header names another
author than the sealed, signed sender (`bridge.sender`: the rules submission applies):
its notice (one per envelope) names the signed sender and the claimed address, never
content. Content is never logged. Other notices fold: one per claimed sender (a
directory member) per `notice_fold_seconds`, and one per account per window for
envelopes whose sender is unknown (they do not open, or claim an address outside the
directory, which a forger can vary at will), so a flood of bad envelopes makes few.
Mail from outside (sealed by a bubble gateway's inbound listener) is checked and marked
by `bridge.external` instead of the directory, and never shown as a member's; if it is
PGP/MIME encrypted to the account's OpenPGP key, it is decrypted first
(`gateway.pgp.inbound`), so those checks apply to the fields inside.

Push: for each unlocked account and home relay, a watcher holds a listing open on the
relay (`RelayClient.list(wait=push_wait)`), which answers as soon as an envelope
arrives; at most `push_connections` are held per gateway. Pairs beyond that bound,
and every pair when `push_wait` is 0, are listed every `poll_interval` seconds. A
relay that answers an empty held listing at once (one that does not hold listings)
is listed again only after `poll_interval`; one that fails is retried with backoff,
but at least every `poll_interval`, so a relay back from an outage is noticed as
soon as polling would notice it.
The envelopes of one account are taken one pass at a time (a per-account lock), so
two relays holding the same envelope deliver it once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import nacl.encoding
import nacl.hash

from bridge.directory import KeyStatus
from bridge.envelope import OpenedEnvelope, open_envelope
from bridge.errors import CannotOpen, RelayError
from bridge.external import is_external, open_external
from bridge.headers import DEFAULT_LIMITS, HeaderError, HeaderLimits, parse_header
from bridge.keys import AccountKeys
from bridge.relay.client import EnvelopeInfo, RelayClient
from bridge.sender import SenderRefused, check_sender
from gateway.delivery import backoff
from gateway.keyring import KeyRing
from gateway.notices import cannot_open_notice, forged_sender_notice
from gateway.pgp.inbound import InboundDecryption
from gateway.recipients import DirectoryUnavailable, Recipients, RevokedAddress, UnknownAddress
from gateway.store.accounts import AccountStore
from gateway.store.mailbox import MailboxStore
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

_FOLD_PERSON = b"sg-notice-fold".ljust(16, b"\0")
_RETRY_INITIAL, _RETRY_MAX = 1.0, 60.0  # seconds between tries of a failing relay
_HELD_AT_LEAST = 1.0  # an empty held listing that answered sooner was not held
_FETCH_WINDOW = 8  # envelopes fetched ahead of the one being stored


@dataclass(frozen=True)
class _Watch:
    """One held listing: an account on one of its home relays."""

    address: str
    url: str
    keys: AccountKeys


def _utc_now() -> datetime:
    return datetime.now(UTC)


def open_with_any_generation(data: bytes, keys: AccountKeys) -> OpenedEnvelope:
    """Open with the newest keys, else with an earlier generation's (mail sealed before
    a rotation, by a sender whose directory replica was not yet updated)."""
    for generation in keys.history():
        try:
            return open_envelope(data, generation)
        except CannotOpen:
            continue
    raise CannotOpen()


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
        header_limits: HeaderLimits = DEFAULT_LIMITS,
        notice_fold_seconds: float = 3600.0,
        clock: Callable[[], datetime] = _utc_now,
        trusted_roots: tuple[bytes, ...] = (),
        push_wait: int = 0,
        push_connections: int = 32,
        openpgp: InboundDecryption | None = None,
    ) -> None:
        """`push_wait`: seconds a relay holds a listing (0: poll only)."""
        super().__init__(poll_interval)
        self._push_wait = push_wait
        self._push_connections = push_connections
        self._watchers: dict[_Watch, asyncio.Task[None]] = {}
        self._account_locks: dict[str, asyncio.Lock] = {}
        self._openpgp = openpgp  # None: PGP/MIME from outside is stored as it came
        self._trusted_roots = trusted_roots  # whose gateways may seal mail from outside
        self._header_limits = header_limits
        self._fold_seconds = notice_fold_seconds
        self._clock = clock
        self._accounts = accounts
        self._keyring = keyring
        self._mailboxes = mailboxes
        self._recipients = recipients
        self._client_for = client_for
        self._domain = domain
        self._rotated: set[int] = set()  # accounts already logged as waiting for a login

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self._stop_watchers(list(self._watchers))

    async def run_once(self) -> bool:
        wanted = self._wanted()
        if self._push_wait:
            await self._stop_watchers([w for w in self._watchers if w not in wanted])
            for watch in wanted:
                if watch not in self._watchers and len(self._watchers) < self._push_connections:
                    self._watchers[watch] = asyncio.create_task(
                        self._watch(watch), name="fetch-watch"
                    )
        await self._poll([w for w in wanted if w not in self._watchers])
        return False

    async def fetch_all(self) -> int:
        """One pass over every unlocked account on every home relay; messages delivered."""
        return await self._poll(self._wanted())

    def _wanted(self) -> list[_Watch]:
        """Every (unlocked account, home relay), in the accounts' priority order."""
        wanted = []
        for address, keys in self._keyring.unlocked().items():
            account = self._accounts.get(address)
            if account is None:
                continue
            if account.public != keys.public:
                # Rotated since this login: new mail may need the new keys, so it waits
                # on the relay until the next login unlocks them.
                if account.id not in self._rotated:
                    self._rotated.add(account.id)
                    log.info("fetch: account %d was rotated; waiting for its next login",
                             account.id)
                continue
            wanted += [_Watch(address, url, keys) for url in account.relays]
        return wanted

    async def _poll(self, watches: Sequence[_Watch]) -> int:
        delivered = 0
        for watch in watches:
            relay = self._client_for(watch.url)
            try:
                listing = await relay.list(watch.keys.mailbox)
                delivered += (await self._take(relay, watch, listing))[0]
            except RelayError as e:
                log.info("fetch: relay %s unavailable (%s)", watch.url, type(e).__name__)
        return delivered

    async def _watch(self, watch: _Watch) -> None:
        """Hold a listing on one relay for one account, take what it shows, and again."""
        relay = self._client_for(watch.url)
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                listing = await relay.list(watch.keys.mailbox, wait=self._push_wait)
                _, taken = await self._take(relay, watch, listing)
            except RelayError as e:
                failures += 1
                if failures == 1:
                    log.info("fetch: relay %s unavailable (%s)", watch.url, type(e).__name__)
                # Backoff, but never slower than polling would notice the relay back.
                rest = backoff(failures, _RETRY_INITIAL, _RETRY_MAX)
                await asyncio.sleep(min(rest, max(self._interval, _RETRY_INITIAL)))
                continue
            except Exception as e:  # noqa: BLE001 - the watcher must outlive one bad pass
                log.error("fetch: watcher pass failed (%s)", type(e).__name__)
                await asyncio.sleep(self._interval)
                continue
            failures = 0
            if listing and not taken:
                await asyncio.sleep(self._interval)  # all left on the relay: not again at once
            elif not listing and loop.time() - started < _HELD_AT_LEAST:
                await asyncio.sleep(self._interval)  # this relay does not hold listings

    async def _stop_watchers(self, watches: Sequence[_Watch]) -> None:
        tasks = [self._watchers.pop(watch) for watch in watches]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _take(
        self, relay: RelayClient, watch: _Watch, listing: Sequence[EnvelopeInfo]
    ) -> tuple[int, int]:
        """Fetch, store and acknowledge what `listing` shows; (delivered, acknowledged).

        Up to `_FETCH_WINDOW` fetches run ahead of the envelope being stored, and each
        ack goes out once its envelope is committed, alongside the next ones: the round
        trips overlap, the order of storing and the rule "ack after commit" do not change.
        """
        address, keys = watch.address, watch.keys
        delivered = 0
        lock = self._account_locks.setdefault(address, asyncio.Lock())
        acks: list[asyncio.Task[None]] = []
        ahead: collections.deque[tuple[bytes, asyncio.Task[bytes]]] = collections.deque()
        async with lock:
            new = []
            for info in listing:
                if self._mailboxes.seen_envelope(address, info.envelope_id):
                    acks.append(asyncio.create_task(relay.ack(keys.mailbox, info.envelope_id)))
                else:
                    new.append(info.envelope_id)
            waiting = iter(new)
            try:
                while True:
                    while len(ahead) < _FETCH_WINDOW and (envelope_id := next(waiting, None)):
                        ahead.append((envelope_id, asyncio.create_task(
                            relay.fetch(keys.mailbox, envelope_id)
                        )))
                    if not ahead:
                        break
                    envelope_id, fetching = ahead.popleft()
                    data = await fetching
                    try:
                        outcome = await self._accept(address, keys, envelope_id, data)
                    except DirectoryUnavailable:
                        continue  # sender cannot be checked now; leave it on the relay
                    delivered += outcome
                    acks.append(asyncio.create_task(relay.ack(keys.mailbox, envelope_id)))
            finally:
                for _, fetching in ahead:
                    fetching.cancel()
                await asyncio.gather(*(task for _, task in ahead), return_exceptions=True)
                done = await asyncio.gather(*acks, return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        return delivered, len(done)

    async def _accept(
        self, address: str, keys: AccountKeys, envelope_id: bytes, data: bytes
    ) -> bool:
        """Store the envelope's message, or a notice; True if a message was delivered."""
        now = self._clock()
        try:
            opened = open_with_any_generation(data, keys)
            if opened.envelope_id != envelope_id:
                raise CannotOpen()
        except CannotOpen:
            await self._reject(address, keys, envelope_id, "cannot-open", now)
            return False
        if is_external(opened.sender):
            return await self._accept_external(address, keys, envelope_id, opened, now)
        signer = opened.sender_signing_key
        try:
            status = (await self._recipients.resolve(opened.sender)).signing_key_status(signer)
            if status is KeyStatus.UNKNOWN:  # the sender may have rotated since our last sync
                status = (await self._recipients.refresh(opened.sender)).signing_key_status(signer)
        except RevokedAddress:
            status = KeyStatus.REVOKED
        except UnknownAddress:
            await self._reject(address, keys, envelope_id, "unknown-sender", now)
            return False
        if not status.accepted:
            reason = "revoked-key" if status is KeyStatus.REVOKED else "sender-mismatch"
            await self._reject(address, keys, envelope_id, reason, now, opened.sender)
            return False
        try:  # the header must name the sealed, signed sender, by the submission rules
            limits = self._header_limits
            header = parse_header(opened.message, limit=limits.max_header_block)
            check_sender(header, opened.sender, limits)
        except HeaderError as e:
            await self._replace_forgery(address, keys, envelope_id, opened.sender, e, now)
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
            log.debug("fetch: envelope %s delivered", envelope_id.hex()[:8])
        return uid is not None

    async def _accept_external(
        self, address: str, keys: AccountKeys, envelope_id: bytes, opened: OpenedEnvelope,
        now: datetime,
    ) -> bool:
        """Mail from outside, sealed by an inbound gateway (`bridge.external`): stored marked
        as external, or replaced by a notice when its header claims a bubble author."""
        if self._openpgp is not None:
            message = await asyncio.to_thread(self._openpgp.open, address, keys, opened.message)
            opened = dataclasses.replace(opened, message=message)
        try:
            message = open_external(opened, self._trusted_roots, self._domain,
                                    self._header_limits)
        except CannotOpen:
            await self._reject(address, keys, envelope_id, "unknown-sender", now)
            return False
        except HeaderError as e:
            sender = "someone outside the bubble (through its inbound gateway)"
            await self._replace_forgery(address, keys, envelope_id, sender, e, now)
            return False
        uid = await asyncio.to_thread(
            self._mailboxes.deliver, address, keys, "INBOX", message,
            internal_date=now, envelope_id=envelope_id,
        )
        return uid is not None

    async def _replace_forgery(
        self,
        address: str,
        keys: AccountKeys,
        envelope_id: bytes,
        sender: str,
        refused: HeaderError,
        now: datetime,
    ) -> None:
        """Deliver a notice naming the true sender instead of the message (once)."""
        log.warning("fetch: envelope %s rejected: header-sender", envelope_id.hex()[:8])
        # One notice per envelope, never folded: the forger is an identified member, who
        # could as well send that many ordinary messages.
        if not await asyncio.to_thread(self._mailboxes.record_rejected, address, envelope_id):
            return  # already reported
        notice = forged_sender_notice(
            account=address,
            domain=self._domain,
            envelope_id=envelope_id,
            sender=sender,
            claimed=refused.claimed if isinstance(refused, SenderRefused) else None,
            reason=refused.reason if isinstance(refused, SenderRefused) else str(refused),
            when=now,
        )
        await asyncio.to_thread(
            self._mailboxes.deliver, address, keys, "INBOX", notice, internal_date=now
        )

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
        if not await self._record_rejected(address, keys, envelope_id, now, sender):
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

    async def _record_rejected(
        self, address: str, keys: AccountKeys, envelope_id: bytes, now: datetime,
        fold: str | None,
    ) -> bool:
        """Record the refused envelope; True if this window has no notice for `fold` yet
        (None: the account's own window). The fold key is a keyed hash: no address at rest."""
        fold_key = b"" if fold is None else nacl.hash.blake2b(
            fold.encode("utf-8"), digest_size=16, key=keys.storage_key,
            person=_FOLD_PERSON, encoder=nacl.encoding.RawEncoder,
        )
        window = int(now.timestamp() // self._fold_seconds)
        return await asyncio.to_thread(
            self._mailboxes.record_rejected, address, envelope_id, fold_key, window
        )
