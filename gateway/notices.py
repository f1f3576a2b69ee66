"""Notices the gateway puts in a user's INBOX, rendered from sealgate_templates/notices/.

A notice is an ordinary RFC 5322 message from the gateway itself; it never
contains content of the message it reports on.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from importlib.resources import files

import jinja2
import nacl.utils

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(files("sealgate_templates") / "notices")),
    autoescape=False,  # noqa: S701 - plain-text mail bodies, not HTML
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)

CANNOT_OPEN_REASONS = {
    "cannot-open": "the envelope failed its integrity check",
    "revoked-key": "the sender's key or address has been revoked in the bubble directory",
    "sender-mismatch": "the sender's signature does not match the bubble directory",
    "unknown-sender": "the sender is not in the bubble directory",
}


def render_notice(
    template: str, *, account: str, domain: str, subject: str, when: datetime,
    **values: str | bool,
) -> bytes:
    body = _env.get_template(template).render(account=account, **values)
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = f"Sealgate <postmaster@{domain}>"
    msg["To"] = account
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(when)
    msg["Message-ID"] = f"<notice.{nacl.utils.random(12).hex()}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    return msg.as_bytes()


def cannot_open_notice(
    *,
    account: str,
    domain: str,
    envelope_id: bytes,
    reason: str,
    when: datetime,
    fold_seconds: float = 3600.0,
) -> bytes:
    """The notice of a refused envelope; later ones like it within `fold_seconds` get none."""
    return render_notice(
        "cannot_open.txt.j2",
        account=account,
        domain=domain,
        subject="A sealed message could not be opened",
        when=when,
        envelope_id=envelope_id.hex(),
        arrived=email.utils.format_datetime(when),
        reason=CANNOT_OPEN_REASONS[reason],
        fold_minutes=str(max(1, round(fold_seconds / 60))),
    )


UNDELIVERED_REASONS = {
    "purged": "the relay's storage was full, and it removes the oldest unfetched messages"
              " first to make room",
    "expired": "it waited on the relay longer than the relay keeps messages",
}
# Outcomes where the sender's own gateway stopped trying (`gateway.delivery`).
GAVE_UP_REASONS = {
    "refused": "every relay of the recipient refused it or could not be reached, for"
               " longer than this gateway keeps trying",
    "revoked": "the recipient's address has been revoked in the bubble directory",
}
_MAX_SHOWN_SUBJECT = 200


def undelivered_notice(
    *,
    account: str,
    domain: str,
    envelope_id: bytes,
    recipient: str,
    subject: str,
    sent: datetime,
    removed: datetime | None,
    reason: str,
    when: datetime,
) -> bytes:
    """The notice of a sent message that was never delivered: its relay removed it
    unfetched (`reason` in `UNDELIVERED_REASONS`, `removed` the relay's hour), or this
    gateway gave up on it (`GAVE_UP_REASONS`, `removed` the moment it did). `recipient`
    and `subject` come from the sender's own records, never from a relay; the subject
    is shown on one line, without control characters, shortened if long."""
    shown = "".join(c if c.isprintable() else " " for c in subject).strip()
    if len(shown) > _MAX_SHOWN_SUBJECT:
        shown = shown[: _MAX_SHOWN_SUBJECT - 1] + "\u2026"
    gave_up = reason in GAVE_UP_REASONS
    if removed is None:
        moment = "at some time"
    elif gave_up:
        moment = email.utils.format_datetime(removed)
    else:
        moment = f"in the hour from {email.utils.format_datetime(removed)}"
    return render_notice(
        "undelivered.txt.j2",
        account=account,
        domain=domain,
        subject="A message you sent was not delivered",
        when=when,
        envelope_id=envelope_id.hex(),
        recipient=recipient,
        subject_shown=shown or "(no subject)",
        sent=email.utils.format_datetime(sent),
        removed=moment,
        reason=GAVE_UP_REASONS[reason] if gave_up else UNDELIVERED_REASONS[reason],
        gave_up=gave_up,
    )


_SHOWABLE = re.compile(r"[!-~]{1,254}")  # printable ASCII, as long as an address may be


def forged_sender_notice(
    *,
    account: str,
    domain: str,
    envelope_id: bytes,
    sender: str,
    claimed: str | None,
    reason: str,
    when: datetime,
) -> bytes:
    """The notice that replaces a message whose header names someone other than its
    sealed, signed sender. `claimed` is shown only when it is a plain printable address
    (the rest of the header is the sender's text and stays out)."""
    shown = claimed if claimed is not None and _SHOWABLE.fullmatch(claimed) else ""
    return render_notice(
        "forged_sender.txt.j2",
        account=account,
        domain=domain,
        subject="A message with a false sender was stopped",
        when=when,
        envelope_id=envelope_id.hex(),
        arrived=email.utils.format_datetime(when),
        sender=sender,
        claimed=shown,
        reason=reason,
    )
