"""Fixtures shared by more than one test directory.

`mail_backend` (tests/imap_backends.py): the IMAP tests' storage, once per backend kind.
"""

pytest_plugins = ["tests.imap_backends"]
