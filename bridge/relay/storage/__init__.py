"""Where a relay keeps envelopes, their tombstones and directory records.

    protocol      `EnvelopeStorage`, the Protocol the HTTP layer uses, its values and
                  errors (no I/O)
    schema        the tables both backends share and their versioned migrations
    rows          the SQL both backends share, and the age, quota and retention policy
    sqlite_files  `SqliteFileStorage`, the embedded default: SQLite rows plus files
                  under one home, owned by one process
    postgres      `PostgresStorage`: everything (bytes too) in PostgreSQL, shared by
                  any number of relay processes on any number of hosts

`open_storage` picks the backend a `RelayConfig` names.
"""

from __future__ import annotations

from bridge.relay.config import RelayConfig
from bridge.relay.storage.protocol import (
    DEPOSITOR_TAG_LEN,
    HOUR,
    EnvelopeStatus,
    EnvelopeStorage,
    NewEnvelope,
    PutOutcome,
    PutResult,
    StatusAnswer,
    StorageFull,
    StorageSchemaError,
    StorageUnavailable,
    StorageUsage,
    StoredEnvelope,
    SweepResult,
    coarse_hour,
    depositor_tag,
)
from bridge.relay.storage.rows import PurgeHook
from bridge.relay.storage.sqlite_files import SqliteFileStorage

__all__ = [
    "DEPOSITOR_TAG_LEN", "HOUR", "EnvelopeStatus", "EnvelopeStorage", "NewEnvelope",
    "PutOutcome", "PutResult",
    "SqliteFileStorage", "StatusAnswer", "StorageFull", "StorageSchemaError",
    "StorageUnavailable", "StorageUsage", "StoredEnvelope", "SweepResult", "coarse_hour",
    "depositor_tag", "open_storage",
]


def open_storage(config: RelayConfig, on_purge: PurgeHook | None = None) -> EnvelopeStorage:
    """The storage `config` names: PostgreSQL at `config.db`, else SQLite + files in home."""
    if config.db is not None:
        try:  # psycopg is needed only here
            from bridge.relay.storage.postgres import PostgresStorage
        except ImportError:
            raise StorageUnavailable(
                "a PostgreSQL relay needs psycopg: install sealgate[postgres]"
            ) from None

        return PostgresStorage(
            config.db, quota=config.quota, retention=config.retention, on_purge=on_purge,
        )
    return SqliteFileStorage(
        config.home, quota=config.quota, retention=config.retention, on_purge=on_purge,
    )
