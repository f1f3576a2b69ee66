"""The gateway's one frozen settings object, built once by the CLI and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.envelope import MAX_MESSAGE_BYTES
from bridge.headers import MAX_ADDRESS_FIELD, MAX_HEADER_BLOCK, HeaderLimits
from gateway.imap.config import ImapConfig

MiB = 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    home: Path
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2587
    imap_host: str = "127.0.0.1"
    imap_port: int = 2143
    smtps_host: str = "127.0.0.1"
    smtps_port: int | None = None  # submission over implicit TLS (port 465 style); None: off
    imaps_host: str = "127.0.0.1"
    imaps_port: int | None = None  # IMAP over implicit TLS (port 993 style); None: off
    inbound_host: str = "127.0.0.1"
    inbound_port: int | None = None  # the MX hands mail from outside here; None: off
    inbound_authserv_id: str = ""  # the MX's Authentication-Results id kept on inbound mail
    # Mail to recipients outside the bubble (gateway.pgp): through this smarthost, as
    # OpenPGP; None: every recipient outside is refused at RCPT.
    smarthost_host: str = "127.0.0.1"
    smarthost_port: int | None = None
    smarthost_starttls: bool = True  # refuse to hand mail over without STARTTLS
    smarthost_ca_file: Path | None = None  # trust only these certificates (None: the system's)
    smarthost_user: str = ""  # AUTH towards the smarthost (over TLS), when set
    smarthost_password_file: Path | None = None  # its first line is the AUTH password
    smarthost_timeout: float = 60.0
    allow_plaintext_to: tuple[str, ...] = ()  # domains mail may go to without a key: in clear
    sent_copy: bool = True  # a sealed copy of each submitted message in the sender's Sent
    submission_limit: int = 1000  # messages one account may submit per submission_window;
    submission_window: float = 3600.0  # beyond, MAIL gets 451 4.7.1
    hostname: str = "sealgate.localhost"  # SMTP greeting and certificate name
    max_message_bytes: int = 50 * MiB
    max_recipients: int = 100
    max_transaction_bytes: int = 1024 * MiB  # message size x recipients; more gets 552 5.3.4
    outbox_part_bytes: int = 64 * MiB  # sealed envelopes one SMTP session holds and commits at once
    delivery_batch_bytes: int = 64 * MiB  # envelopes one delivery pass loads (a larger one: alone)
    max_smtp_connections: int = 200  # concurrent SMTP connections; the next gets 421 4.7.0
    smtp_timeout: float = 300.0
    poll_interval: float = 5.0  # how often unlocked mailboxes not held open are fetched
    push_wait: int = 50  # seconds a relay holds a listing open for new mail (0: poll only)
    push_connections: int = 32  # listings held open at once (per gateway); more: polled
    directory_sync_interval: float = 60.0
    relay_timeout: float = 120.0  # a whole request, large deposits included
    relay_ca_file: Path | None = None  # trust only these certificates for https relays
    retry_initial: float = 1.0  # first delay after a failed deposit; doubles up to retry_max
    retry_max: float = 300.0
    # An envelope no relay took for this long after its submission is given up: the
    # sender gets an "undeliverable" notice in INBOX (gateway.delivery).
    delivery_give_up: float = 5 * 86400.0
    delivery_concurrency: int = 8  # deposits in flight at once
    # CPU priority of the delivery process below the gateway's (nice increment, 0-19): a
    # burst of submissions is answered first and deposited right behind it.
    delivery_nice: int = 10
    strip_headers: tuple[str, ...] = ()  # operator additions to the metadata policy
    # IMAP (gateway.imap.config.ImapConfig says what each bounds; _IMAP_SETTINGS maps them)
    imap_idle_timeout: float = 1800.0
    imap_login_idle_timeout: float = 60.0  # before login
    imap_loopback_plaintext_login: bool = True  # LOGIN without TLS from 127/8 and ::1
    imap_max_line: int = 65_536
    imap_max_literal: int = 65_536
    imap_max_command: int = 262_144
    imap_max_nesting: int = 16
    imap_bad_command_limit: int = 10
    imap_max_login_failures: int = 3
    imap_max_connections: int = 512
    imap_fetch_batch: int = 64
    imap_header_batch: int = 1024
    imap_header_batch_octets: int = 16 * MiB
    imap_tls_handshake_timeout: float = 30.0
    max_header_block: int = MAX_HEADER_BLOCK  # bytes of a message's header block
    max_address_field: int = MAX_ADDRESS_FIELD  # characters of a From/Sender/Reply-To value
    imap_fetch_batch_octets: int = 8 * MiB  # decrypted octets per FETCH/SEARCH storage call
    imap_max_mime_depth: int = 32  # deeper parts are shown opaque by FETCH and SEARCH
    imap_max_mime_parts: int = 10_000  # parts one message is cut into at most
    imap_idle_poll: float = 30.0  # seconds between IDLE's looks for other processes' commits
    imap_storage_threads: int = 8  # threads making IMAP storage calls (none runs on the loop)
    # Per-account quota (IMAP QUOTA, RFC 9208): octets and messages over all folders; an
    # IMAP APPEND or COPY past either gets NO [OVERQUOTA]. Mail arriving from the bubble is
    # never refused for it (it is already sealed for this account). 0: no limit.
    imap_quota_storage: int = 10 * 1024 * MiB
    imap_quota_messages: int = 0
    notice_fold_seconds: float = 3600.0  # one "cannot open" notice per sender or account per window
    # Logins (gateway.login_limiter): the first failed login's answer waits
    # login_failure_delay, doubling per failure of its client or account up to the max;
    # login_block_failures failures from one client address block it for
    # login_block_seconds; counts are forgotten login_failure_window after their last
    # failure; login_tracked_max clients (and as many accounts) are remembered.
    login_failure_delay: float = 0.5
    login_failure_delay_max: float = 15.0
    login_block_failures: int = 10
    login_block_seconds: float = 900.0
    login_failure_window: float = 900.0
    login_tracked_max: int = 65_536
    kdf_workers: int = 2  # threads for Argon2id (logins), apart from sealing and delivery
    kdf_queue: int = 16  # logins waiting for them; beyond, a temporary failure
    # Sent envelopes: their relay is asked what became of them every status_check_interval
    # seconds; one it no longer knows is forgotten status_forget_after the message was sent.
    status_check_interval: float = 3600.0
    status_forget_after: float = 90 * 86400.0
    import_batch_messages: int = 100  # migrated messages filed per transaction (gateway.migrate)
    import_batch_bytes: int = 64 * MiB  # and their octets at most (a larger one: alone)

    def __post_init__(self) -> None:
        ports = ("smtp_port", "imap_port", "smtps_port", "imaps_port", "inbound_port",
                 "smarthost_port")
        for name in ports:
            if getattr(self, name) is not None and not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"setting '{name}': must be a port number 0-65535")
        for name in (
            "max_message_bytes",
            "max_recipients",
            "delivery_concurrency",
            "max_transaction_bytes",
            "outbox_part_bytes",
            "delivery_batch_bytes",
            "max_smtp_connections",
            "login_block_failures",
            "login_tracked_max",
            "kdf_workers",
            "submission_limit",
            "import_batch_messages",
            "import_batch_bytes",
            "push_connections",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting '{name}': must be positive")
        if isinstance(self.push_wait, bool) or not isinstance(self.push_wait, int) \
                or not 0 <= self.push_wait <= 3600:
            raise ValueError("setting 'push_wait': must be whole seconds from 0 to 3600")
        for name in (
            "smtp_timeout",
            "poll_interval",
            "directory_sync_interval",
            "relay_timeout",
            "retry_initial",
            "retry_max",
            "delivery_give_up",
            "notice_fold_seconds",
            "login_block_seconds",
            "login_failure_window",
            "status_check_interval",
            "status_forget_after",
            "submission_window",
            "smarthost_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting '{name}': must be a positive number of seconds")
        if self.max_message_bytes > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"setting 'max_message_bytes': at most {MAX_MESSAGE_BYTES} (the envelope limit)"
            )
        self.header_limits()  # checks both
        if not 0 <= self.delivery_nice <= 19:
            raise ValueError("setting 'delivery_nice': must be a whole number from 0 to 19")
        if self.kdf_queue < 0:
            raise ValueError("setting 'kdf_queue': must not be negative")
        if not 0 <= self.login_failure_delay <= self.login_failure_delay_max:
            raise ValueError(
                "setting 'login_failure_delay': must be 0 or more and not above "
                "login_failure_delay_max"
            )
        if self.smarthost_user and self.smarthost_password_file is None:
            raise ValueError("setting 'smarthost_user': needs smarthost_password_file")
        if self.smarthost_user and not self.smarthost_starttls:
            raise ValueError("setting 'smarthost_user': AUTH needs smarthost_starttls = true")
        for domain in self.allow_plaintext_to:
            if not domain or "@" in domain or any(c.isspace() for c in domain):
                raise ValueError(f"setting 'allow_plaintext_to': {domain!r} is not a domain")
        if self.retry_max < self.retry_initial:
            raise ValueError("setting 'retry_max': must not be below retry_initial")
        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ValueError("setting 'hostname': must be a host name without spaces")
        for name in ("imap_quota_storage", "imap_quota_messages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"setting '{name}': must be a whole number, 0 for no limit")
        try:
            self.imap_config()
        except ValueError as e:  # name the setting, not the ImapConfig field
            field, _, rest = str(e).removeprefix("ImapConfig.").partition(" ")
            raise ValueError(f"setting '{_IMAP_SETTINGS.get(field, field)}': {rest}") from None

    def header_limits(self) -> HeaderLimits:
        return HeaderLimits(self.max_header_block, self.max_address_field)

    def imap_config(self) -> ImapConfig:
        """The IMAP listener's limits, from these settings."""
        values = {field: getattr(self, name) for field, name in _IMAP_SETTINGS.items()}
        return ImapConfig(
            **values,
            quota_storage=self.imap_quota_storage or None,  # 0: no limit
            quota_messages=self.imap_quota_messages or None,
            server_name="Sealgate",
        )


# ImapConfig field -> the setting that gives it (APPEND is bounded like submission).
_IMAP_SETTINGS = {
    "max_append": "max_message_bytes",
    **{
        name: f"imap_{name}"
        for name in (
            "max_line", "max_literal", "max_command", "max_nesting", "bad_command_limit",
            "max_login_failures", "max_connections", "fetch_batch", "fetch_batch_octets",
            "max_mime_depth", "max_mime_parts", "header_batch", "header_batch_octets",
            "idle_timeout", "login_idle_timeout", "idle_poll", "storage_threads",
            "tls_handshake_timeout", "loopback_plaintext_login",
        )
    },
}
