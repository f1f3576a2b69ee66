"""Mail to correspondents outside the bubble, through the organisation's smarthost.

An outbox entry for the smarthost looks like any other: a random envelope id, opaque
bytes, and one "relay", `SMARTHOST`. Its bytes are a job sealed (XChaCha20-Poly1305)
under a key derived from the gateway's credential seed (purpose "sg-smarthost"): the
reverse path, the recipient and the message, which is PGP/MIME ciphertext (or, for a
domain in `allow_plaintext_to`, the operator's explicit exception, then the seal is
all that covers it). So the outbox never holds a message or an address in clear.

`SmarthostClient.deposit` is what the delivery worker calls, as it calls a relay's: it
opens the job and hands the message over with smtplib (in a worker thread) with
STARTTLS and AUTH as `SmarthostSettings` say. A temporary failure (connection refused,
4xx) raises `RelayUnavailable` and a refusal (5xx) `RelayRejected`; the worker keeps the
entry and tries again later either way. Whatever else goes wrong (a job that does not
open, no smarthost set up any more) is one of those two as well, so one entry can never
stop the worker's pass. Error text carries codes only: a smarthost's reply may quote
addresses. Never logs content or addresses.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret

from bridge.errors import CannotOpen, RelayRejected, RelayUnavailable
from bridge.keys import GatewayCredential, derive

SMARTHOST = "smtp://smarthost"  # the relay "URL" of outbox entries for the smarthost
_JOB_MAGIC = b"SGJ1"
_JOB_HEADER = struct.Struct(">4sHH")  # magic, reverse-path length, recipient length


def job_box(credential_seed: bytes) -> nacl.secret.Aead:
    return nacl.secret.Aead(derive(credential_seed, b"sg-smarthost"))


def seal_job(box: nacl.secret.Aead, reverse_path: str, recipient: str, message: bytes) -> bytes:
    sender, rcpt = reverse_path.encode("utf-8"), recipient.encode("utf-8")
    plain = _JOB_HEADER.pack(_JOB_MAGIC, len(sender), len(rcpt)) + sender + rcpt + message
    return bytes(box.encrypt(plain))


def open_job(box: nacl.secret.Aead, sealed: bytes) -> tuple[str, str, bytes]:
    """(reverse path, recipient, message); `CannotOpen` for anything but a sealed job."""
    try:
        plain = box.decrypt(sealed)
        magic, sender_len, rcpt_len = _JOB_HEADER.unpack_from(plain)
    except (nacl.exceptions.CryptoError, struct.error):
        raise CannotOpen("smarthost job") from None
    if magic != _JOB_MAGIC or _JOB_HEADER.size + sender_len + rcpt_len > len(plain):
        raise CannotOpen("smarthost job")
    start = _JOB_HEADER.size
    sender = plain[start : start + sender_len].decode("utf-8")
    rcpt = plain[start + sender_len : start + sender_len + rcpt_len].decode("utf-8")
    return sender, rcpt, plain[start + sender_len + rcpt_len :]


@dataclass(frozen=True)
class SmarthostSettings:
    host: str
    port: int
    starttls: bool = True  # refuse to send unless the smarthost offers STARTTLS
    ca_file: Path | None = None  # trust only these certificates (None: the system's)
    user: str = ""  # AUTH only when set (and only over TLS)
    password: str = ""
    timeout: float = 60.0
    local_hostname: str = "sealgate.localhost"


class SmarthostClient:
    """Hands sealed smarthost jobs to the smarthost; duck-types `RelayClient.deposit`."""

    url = SMARTHOST

    def __init__(self, settings: SmarthostSettings | None, box: nacl.secret.Aead) -> None:
        self._settings = settings  # None: queued jobs wait until a smarthost is set up
        self._box = box

    async def deposit(self, envelope: bytes, credential: GatewayCredential) -> None:
        if self._settings is None:
            raise RelayUnavailable("no smarthost is set up (smarthost_port)")
        try:
            reverse_path, recipient, message = open_job(self._box, envelope)
        except CannotOpen:
            raise RelayRejected(400, "smarthost job does not open") from None
        await asyncio.to_thread(self._send, self._settings, reverse_path, recipient, message)

    @staticmethod
    def _send(s: SmarthostSettings, reverse_path: str, recipient: str, message: bytes) -> None:
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout,
                              local_hostname=s.local_hostname) as smtp:
                smtp.ehlo()
                if s.starttls:
                    if not smtp.has_extn("starttls"):
                        raise RelayUnavailable("smarthost offers no STARTTLS")
                    smtp.starttls(context=ssl.create_default_context(cafile=s.ca_file))
                    smtp.ehlo()
                if s.user:
                    smtp.login(s.user, s.password)
                options = ["SMTPUTF8"] if not (reverse_path + recipient).isascii() else []
                smtp.sendmail(reverse_path, [recipient], message, mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            code = next(iter(e.recipients.values()))[0]
            raise _refusal(code, "recipient refused") from None
        except smtplib.SMTPResponseException as e:
            raise _refusal(e.smtp_code, type(e).__name__) from None
        except (OSError, smtplib.SMTPException, ValueError) as e:  # ValueError: bad text
            raise RelayUnavailable(f"smarthost: {type(e).__name__}") from None


def _refusal(code: int, what: str) -> Exception:
    if 400 <= code < 500:
        return RelayUnavailable(f"smarthost: {code} {what}")
    return RelayRejected(code, f"smarthost: {what}")
