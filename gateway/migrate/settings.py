"""The migration tool's settings (one frozen object; `--config FILE` sets them in TOML)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class MigrateSettings:
    max_message_bytes: int = 50 * MiB  # larger messages are listed in the report, not imported
    batch_messages: int = 500  # messages fetched, sealed and committed together
    batch_bytes: int = 32 * MiB  # at most this much message text in one batch (one is always let)
    imap_timeout: float = 60.0  # seconds one IMAP command may take
    imap_retries: int = 3  # reconnections after a dropped connection, per folder
    imap_retry_delay: float = 1.0  # seconds before the first reconnection; doubles
    max_messages_per_second: float = 0.0  # spare a busy legacy server (0: as fast as it goes)
    parallel_accounts: int = 4  # batch mode (--accounts): accounts migrated at once

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "batch_messages", "batch_bytes", "parallel_accounts"):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting '{name}': must be positive")
        if self.imap_timeout <= 0:
            raise ValueError("setting 'imap_timeout': must be a positive number of seconds")
        if self.max_messages_per_second < 0:
            raise ValueError("setting 'max_messages_per_second': must not be negative")
        if self.imap_retries < 0 or self.imap_retry_delay < 0:
            raise ValueError("setting 'imap_retries'/'imap_retry_delay': must not be negative")
