"""Fixtures shared by more than one test directory.

`mail_backend` (tests/imap_backends.py): the IMAP tests' storage, once per backend kind.
`relay_backend` (tests/relay_backends.py): the relay's storage, SQLite + files and PostgreSQL.
"""

pytest_plugins = ["tests.imap_backends", "tests.relay_backends"]
