"""The submission handler: all SMTP policy of the gateway in one object.

MAIL checks the sender is the authenticated account and that the directory has not
revoked it; RCPT resolves each recipient in the signed directory (and refuses, from a
declared SIZE, a transaction that would exceed `max_transaction_bytes`); DATA
sanitizes the message, seals one envelope per recipient and commits them all to the
durable outbox before answering 250 (in parts bounded by bytes, see
`gateway.smtp.queueing`); a message whose size times its recipients exceeds
`max_transaction_bytes` is refused with 552 5.3.4. With `sent_copy` the message as it
was sealed (its Bcc line put back) is also stored, sealed under the account's storage
key, in the account's Sent folder, in the outbox transaction that queues its envelopes
(`gateway.smtp.sent`): both or neither, before the 250.
MAIL answers `451 4.7.1` once an account had `submission_limit` messages accepted within
`submission_window` seconds (`gateway.smtp.rate`).
A recipient outside the bubble is admitted at RCPT by `gateway.pgp` (the gateway holds
their OpenPGP key, and a smarthost) or refused with `550 5.7.1`; DATA queues a PGP/MIME
message for them, sealed as a smarthost job, in the same commit as the envelopes.
Plaintext exists only in memory for the duration of DATA. Log lines never carry
addresses, subjects or content.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session

from bridge.directory import DirectoryEntry, normalize_address
from bridge.envelope import new_envelope_id, seal
from bridge.headers import DEFAULT_LIMITS, HeaderLimits, HeaderTooLarge, parse_header
from bridge.keys import AccountKeys
from bridge.sanitize import SanitizePolicy, sanitize
from gateway.imap.backend import AuthenticationFailed
from gateway.keyring import KeyRing
from gateway.login_gate import LoginGate
from gateway.pgp.outbound import OutsideMail
from gateway.pgp.outside import OutsideRecipient
from gateway.recipients import DirectoryUnavailable, Recipients, RevokedAddress, UnknownAddress
from gateway.smtp.policy import (
    SmtpRefusal,
    check_envelope_sender,
    check_headers,
    check_transaction_size,
    complete_headers,
)
from gateway.smtp.queueing import Item, OutboxWriter, refusal_for
from gateway.smtp.rate import SubmissionRate
from gateway.smtp.rcpt import ACCEPTED, resolve_recipient
from gateway.smtp.sent import SentCopies
from gateway.smtp.server import ehlo_lines
from gateway.undelivered import seal_note, subject_of

log = logging.getLogger(__name__)


class SubmissionHandler:
    def __init__(
        self,
        *,
        keyring: KeyRing,
        recipients: Recipients,
        outbox: OutboxWriter,
        domain: str,
        policy: SanitizePolicy,
        max_recipients: int,
        max_transaction_bytes: int,
        wake_delivery: Callable[[], None],
        on_unlock: Callable[[], None],
        header_limits: HeaderLimits = DEFAULT_LIMITS,
        gate: LoginGate,
        sent_copies: SentCopies | None = None,
        rate: SubmissionRate | None = None,
        outside: OutsideMail | None = None,
    ) -> None:
        self._rate = rate
        self._outside = outside  # None: every recipient outside the bubble is refused
        self._keyring = keyring
        self._sent_copies = sent_copies  # None: no Sent copy (clients that APPEND their own)
        self._gate = gate
        self._recipients = recipients
        self._outbox = outbox
        self._domain = domain.lower()
        self._policy = policy
        self._max_recipients = max_recipients
        self._max_transaction_bytes = max_transaction_bytes
        self._wake_delivery = wake_delivery
        self._on_unlock = on_unlock
        self._header_limits = header_limits
        # Per-transaction state: the directory entry of every accepted recipient.
        self._resolved: weakref.WeakKeyDictionary[Envelope, dict[str, DirectoryEntry]] = (
            weakref.WeakKeyDictionary()
        )
        self._resolved_outside: weakref.WeakKeyDictionary[
            Envelope, dict[str, OutsideRecipient]
        ] = weakref.WeakKeyDictionary()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        return ehlo_lines(session, hostname, responses, auth=True)

    async def verify(self, credentials: LoginPassword, peer: object) -> str | None:
        """The account these AUTH credentials unlock, or None after the failure's delay.

        Argon2id runs in the login gate's pool; raises `LoginRefused` when the client is
        blocked or the pool is full."""
        login = credentials.login.decode("utf-8", "replace")
        try:
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            password = None

        def unlock() -> None:
            if password is None:
                raise AuthenticationFailed()  # not a password any account can have
            self._keyring.unlock(login, password)

        try:
            await self._gate.check("smtp", peer, login, unlock)
        except AuthenticationFailed:
            return None
        self._on_unlock()
        return normalize_address(login)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        account = session.auth_data
        try:
            check_envelope_sender(address, str(account))
            if self._rate is not None:
                self._rate.check(str(account))
        except SmtpRefusal as refusal:
            return refusal.reply
        try:
            await self._recipients.resolve(str(account))
        except RevokedAddress:
            return "550 5.7.1 This account has been revoked in the bubble directory; it cannot send"
        except (UnknownAddress, DirectoryUnavailable):
            pass  # its own record out of reach: the recipients' gateways check the sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self._resolved[envelope] = {}
        self._resolved_outside[envelope] = {}
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = await resolve_recipient(
            address, self._resolved.setdefault(envelope, {}), recipients=self._recipients,
            domain=self._domain,
            outside_reply="550 5.7.1 Recipient is outside the bubble; refusing to send in clear",
            max_recipients=self._max_recipients,
            max_transaction_bytes=self._max_transaction_bytes,
            mail_options=envelope.mail_options,
            outside=None if self._outside is None else self._outside.admit,
            resolved_outside=self._resolved_outside.setdefault(envelope, {}),
        )
        if reply == ACCEPTED:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    def _seal_one(
        self, message: bytes, account: str, keys: AccountKeys, subject: str,
        entry: DirectoryEntry | OutsideRecipient,
    ) -> Item:
        """The envelope of `message` for one recipient, with its own random id, and the
        sender's sealed note of it (for a notice should its relay lose it); for one
        outside the bubble, its OpenPGP message for the smarthost (`gateway.pgp`), with
        the same note (for a notice should the smarthost never take it)."""
        if isinstance(entry, OutsideRecipient):
            assert self._outside is not None  # noqa: S101 - admitted by it at RCPT
            return self._outside.item(message, account, keys, entry, subject)
        envelope_id = new_envelope_id()
        sealed = seal(
            message, sender=account, sender_keys=keys, recipient=entry.keys, envelope_id=envelope_id
        )
        note = seal_note(account, keys, envelope_id, entry.address, subject)
        return envelope_id, sealed, tuple(entry.relays), note

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        account = str(session.auth_data)
        keys = self._keyring.get(account)
        resolved = self._resolved.pop(envelope, {})
        outside = self._resolved_outside.pop(envelope, {})
        raw = envelope.original_content
        if keys is None or not (resolved or outside) or not isinstance(raw, bytes):
            return "451 4.3.0 Session state lost; please resubmit"
        try:
            check_transaction_size(
                len(raw), len(resolved) + len(outside), self._max_transaction_bytes
            )
            header = parse_header(raw, limit=self._header_limits.max_header_block)
            check_headers(header, account, self._header_limits)
            cleaned = sanitize(
                raw, policy=self._policy, message_id_key=keys.message_id_key, header=header
            )
        except SmtpRefusal as refusal:
            return refusal.reply
        except HeaderTooLarge:
            return "552 5.3.4 Message header block too large"
        except ValueError:
            return "554 5.6.0 Message header is malformed"
        message = complete_headers(cleaned.message, header, self._domain)
        copy = None
        if self._sent_copies is not None:
            bcc = ", ".join(cleaned.bcc).encode("utf-8")
            copy = functools.partial(
                self._sent_copies.prepare, account, keys,
                (b"Bcc: " + bcc + b"\r\n" if bcc else b"") + message,
            )
        # Sealing costs ~2 ms/MB per recipient; libsodium releases the GIL, so a worker
        # thread keeps other sessions answered: a small message's in the committing
        # thread, unless OpenPGP (up to ~120 ms a recipient) would hold others' commit.
        # The commit is shared with concurrent sessions (group commit) and durable
        # before the 250.
        try:
            count = await self._outbox.submit(
                [*resolved.values(), *outside.values()],
                functools.partial(self._seal_one, message, account, keys, subject_of(header)),
                copy, size=None if outside else len(message),
            )
        except Exception as e:  # noqa: BLE001 - the client must get a reply, not a hang
            log.error(
                "smtp: sealing or queueing failed (%s); message not accepted", type(e).__name__
            )
            return refusal_for(e)
        self._wake_delivery()
        if self._rate is not None:
            self._rate.accepted(account)
        log.debug("smtp: accepted a message, %d sealed envelope(s) queued", count)
        return f"250 2.0.0 Sealed for {count} recipient(s) and queued"
