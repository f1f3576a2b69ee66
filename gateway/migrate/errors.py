"""The migration tool's errors: one line each for the operator, never message content.

    MigrateError           a migration that cannot start or go on (the CLI prints it)
    └── SourceError        a source that cannot be read: missing file, no Maildir,
                           wrong credentials, TLS failure, connection lost for good
"""

from __future__ import annotations


class MigrateError(Exception):
    """Root of the migration tool's errors."""


class SourceError(MigrateError):
    """A source that cannot be read (the message says what, in one line)."""
