"""The inbound handler: mail from the organisation's MX (Postfix, Exchange) into the bubble.

The listener has no AUTH; STARTTLS is offered with the gateway's certificate. It takes
mail for every member of the bubble, not only this gateway's accounts: the MX routes the
whole domain to one place, the signed directory knows every member's keys and relays,
and sealing here means the MX's queue is the last place that held the message in clear
(no second plaintext hop to the member's own gateway).

RCPT resolves the recipient in the directory (`550 5.1.1` for an unknown address,
`550 5.7.1` for another domain). DATA checks that the header has the shape every message
must have and names no bubble address as its author (`bridge.external`: an outside
sender must never pass for a member; `550 5.7.1`), strips the routing metadata as for
submitted mail (`bridge.sanitize`), keeps the topmost `Authentication-Results` field of
the MX's own authserv-id (setting `inbound_authserv_id`; RFC 8601 section 5: a field of
any other id may be the sender's own writing), then seals one envelope per recipient
under the external sealed sender and commits them all to the durable outbox before the
250. A relay that is down does not matter here: the outbox delivers later. Size:
`552 5.3.4` past `max_message_bytes` or `max_transaction_bytes`. The listener has a
connection cap of its own (`max_smtp_connections`, like submission's), so an MX flood
cannot take the users' submission slots.

Plaintext exists only in memory for the duration of DATA. Log lines never carry
addresses, subjects or content.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import weakref
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.directory import DirectoryEntry
from bridge.envelope import new_envelope_id, seal
from bridge.external import ORIGIN_FIELD, InboundIdentity, check_external_header
from bridge.headers import DEFAULT_LIMITS, HeaderBlock, HeaderLimits, HeaderTooLarge, parse_header
from bridge.sanitize import SanitizePolicy, sanitize
from bridge.sender import SenderRefused
from gateway.recipients import Recipients
from gateway.smtp.policy import complete_headers
from gateway.smtp.queueing import Item, OutboxWriter, refusal_for
from gateway.smtp.rcpt import ACCEPTED, resolve_recipient
from gateway.smtp.server import GatewaySMTP, ehlo_lines

log = logging.getLogger(__name__)


class InboundSMTP(GatewaySMTP):
    """An inbound session: aiosmtpd's SMTP without AUTH."""

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 No authentication on the inbound listener")


def authentication_results(header: HeaderBlock, authserv_id: str) -> bytes:
    """The first Authentication-Results field whose authserv-id is `authserv_id`, CRLF
    ended; b"" when there is none or `authserv_id` is empty."""
    if not authserv_id:
        return b""
    for field in header.get_all("authentication-results"):
        first = field.text.partition(";")[0].split()
        if first and first[0].lower() == authserv_id.lower():
            raw = field.raw.rstrip(b"\r\n")
            return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    return b""


class InboundHandler:
    def __init__(
        self,
        *,
        identity: InboundIdentity,
        recipients: Recipients,
        outbox: OutboxWriter,
        domain: str,
        policy: SanitizePolicy,
        max_recipients: int,
        max_transaction_bytes: int,
        wake_delivery: Callable[[], None],
        authserv_id: str = "",
        header_limits: HeaderLimits = DEFAULT_LIMITS,
    ) -> None:
        self._identity = identity
        self._recipients = recipients
        self._outbox = outbox
        self._domain = domain.lower()
        # A field of that name from outside would stand beside the receiving gateway's own.
        self._policy = dataclasses.replace(
            policy, extra_headers=(*policy.extra_headers, ORIGIN_FIELD)
        )
        self._max_recipients = max_recipients
        self._max_transaction_bytes = max_transaction_bytes
        self._wake_delivery = wake_delivery
        self._authserv_id = authserv_id
        self._header_limits = header_limits
        self._resolved: weakref.WeakKeyDictionary[Envelope, dict[str, DirectoryEntry]] = (
            weakref.WeakKeyDictionary()
        )

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        return ehlo_lines(session, hostname, responses, auth=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        try:
            self._identity.sender(address)
        except ValueError:
            return "553 5.1.7 Sender address too long"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self._resolved[envelope] = {}
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = await resolve_recipient(
            address, self._resolved.setdefault(envelope, {}), recipients=self._recipients,
            domain=self._domain,
            outside_reply="550 5.7.1 Relaying denied: this gateway takes mail for the bubble only",
            max_recipients=self._max_recipients,
            max_transaction_bytes=self._max_transaction_bytes,
            mail_options=envelope.mail_options,
        )
        if reply == ACCEPTED:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    def _seal_one(self, message: bytes, sender: str, entry: DirectoryEntry) -> Item:
        envelope_id = new_envelope_id()
        sealed = seal(
            message, sender=sender, sender_keys=self._identity.keys, recipient=entry.keys,
            envelope_id=envelope_id,
        )
        return envelope_id, sealed, tuple(entry.relays)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        resolved = self._resolved.pop(envelope, {})
        raw = envelope.original_content
        if not resolved or not isinstance(raw, bytes) or envelope.mail_from is None:
            return "451 4.3.0 Session state lost; please resend"
        if len(raw) * len(resolved) > self._max_transaction_bytes:
            return "552 5.3.4 Message size times recipients exceeds this gateway's limit"
        try:
            header = parse_header(raw, limit=self._header_limits.max_header_block)
            check_external_header(header, self._domain, self._header_limits)
            verdict = authentication_results(header, self._authserv_id)
            cleaned = sanitize(
                raw, policy=self._policy, message_id_key=self._identity.keys.message_id_key,
                header=header,
            )
        except SenderRefused as refused:
            return f"550 5.7.1 {refused.reason}"
        except HeaderTooLarge:
            return "552 5.3.4 Message header block too large"
        except ValueError:
            return "554 5.6.0 Message header is malformed"
        message = verdict + complete_headers(cleaned.message, header, self._domain)
        sender = self._identity.sender(envelope.mail_from)
        seal_one: Callable[[DirectoryEntry], Item] = functools.partial(
            self._seal_one, message, sender
        )
        try:
            count = await self._outbox.submit(list(resolved.values()), seal_one, size=len(message))
        except Exception as e:  # noqa: BLE001 - the MX must get a reply, and keeps the mail
            log.error("inbound: sealing or queueing failed (%s); not accepted", type(e).__name__)
            return refusal_for(e)
        self._wake_delivery()
        log.debug("inbound: accepted a message, %d sealed envelope(s) queued", count)
        return f"250 2.0.0 Sealed for {count} recipient(s) and queued"

