"""The relay's settings: one frozen object with every limit explicit, checked on creation.

Also `load_root_public`, which reads a trusted root's public key from a file.
This module reads that one file and nothing else; it never writes.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from bridge.envelope import MAX_ENVELOPE_LEN, OUTER_HEADER_LEN
from bridge.settings import Duration, Size

MIB = 1024 * 1024
DEFAULT_MAX_ENVELOPE_BYTES = MAX_ENVELOPE_LEN  # the largest envelope the format allows
# A batch deposit's limits; a gateway assumes these (a relay set lower answers 413,
# and the gateway then deposits that batch's envelopes one by one).
DEFAULT_MAX_BATCH_ENVELOPES = 100
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
ROOT_KEY_LEN = 32
DAY = 86400
_POSTGRES_URL = re.compile(r"postgres(ql)?(\+psycopg)?://\S*")


@dataclass(frozen=True)
class RelayConfig:
    """Everything a relay process needs; built once (by the CLI or a test) and passed down."""

    home: Path  # relay.db and envelopes/ live here (unless `db` is set)
    host: str = "127.0.0.1"
    port: int = 0  # 0: let the OS choose (RelayServer.port tells which)
    trusted_roots: tuple[bytes, ...] = ()  # Ed25519 root public keys, 32 bytes each
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES  # larger deposits get 413
    max_batch_envelopes: int = DEFAULT_MAX_BATCH_ENVELOPES  # in one batch deposit; more: 413
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # a batch deposit's body; larger: 413
    max_clock_skew: int = 300  # seconds between a request's Sealgate-Time and ours
    max_list: int = 1000  # envelopes in one list answer (oldest first)
    max_record_bytes: int = 256 * 1024  # a directory record's JSON body
    max_query_bytes: int = 4096  # body of a signed list/fetch/ack (they carry none; some slack)
    max_wait: Duration = 60  # seconds a listing with ?wait= is held at most (longer asks: this)
    wait_recheck: Duration = 5  # seconds between looks at storage while a listing is held
    # (deposits through this process wake it at once; other processes' within this bound)
    max_connections: int = 1024  # open connections at once; the next gets 503 and is closed
    header_timeout: int = 15  # seconds to send a request's head (also the idle keep-alive)
    body_timeout: int = 300  # seconds to send a whole request body; slower ones get 408
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, the relay speaks HTTPS
    tls_key: Path | None = None
    # Storage: envelope bytes kept at most (None: no quota; a deposit that would exceed
    # it purges unfetched envelopes, oldest first; one larger than the quota gets 507),
    # how long an envelope and a tombstone are kept, how often expired ones are swept.
    quota: Size | None = None
    retention: Duration = 30 * DAY
    sweep_interval: Duration = 600
    # postgresql://user@host/dbname: all state (rows and envelope bytes) in PostgreSQL,
    # shared by every relay process given the same URL; None: SQLite + files in home.
    db: str | None = field(default=None, repr=False)  # may carry a password

    def __post_init__(self) -> None:
        if not isinstance(self.home, Path):
            raise ValueError("home must be a pathlib.Path")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host must be a non-empty string")
        _check_int("port", self.port, 0, 65535)
        if not isinstance(self.trusted_roots, tuple) or not all(
            isinstance(root, bytes) and len(root) == ROOT_KEY_LEN for root in self.trusted_roots
        ):
            raise ValueError("trusted_roots must be a tuple of 32-byte public keys")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        _check_int("max_envelope_bytes", self.max_envelope_bytes, OUTER_HEADER_LEN, 2**31)
        _check_int("max_batch_envelopes", self.max_batch_envelopes, 1, 100_000)
        _check_int("max_batch_bytes", self.max_batch_bytes, 1024, 2**31)
        _check_int("max_clock_skew", self.max_clock_skew, 1, 86400)
        _check_int("max_list", self.max_list, 1, 100_000)
        _check_int("max_record_bytes", self.max_record_bytes, 256, 16 * MIB)
        _check_int("max_query_bytes", self.max_query_bytes, 0, MIB)
        _check_int("max_wait", self.max_wait, 0, 3600)
        _check_int("wait_recheck", self.wait_recheck, 1, 3600)
        _check_int("max_connections", self.max_connections, 1, 1_000_000)
        _check_int("header_timeout", self.header_timeout, 1, 3600)
        _check_int("body_timeout", self.body_timeout, 1, 86400)
        if self.quota is not None:
            _check_int("quota", self.quota, OUTER_HEADER_LEN, 2**62)
        _check_int("retention", self.retention, 3600, 100 * 365 * DAY)
        _check_int("sweep_interval", self.sweep_interval, 1, DAY)
        if self.db is not None and not (
            isinstance(self.db, str) and _POSTGRES_URL.fullmatch(self.db)
        ):
            raise ValueError("db must be a postgresql:// URL")


def load_root_public(path: Path) -> bytes:
    """Read a root public key: 32 raw bytes, or 64 hex digits (whitespace around is fine)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read root public key {path}: {exc.strerror}") from None
    if len(data) == ROOT_KEY_LEN:
        return data
    text = data.strip()
    if len(text) == 2 * ROOT_KEY_LEN and all(chr(c) in string.hexdigits for c in text):
        return bytes.fromhex(text.decode("ascii"))
    raise ValueError(
        f"{path} is not a root public key: expected 32 raw bytes or 64 hex digits"
    )


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
