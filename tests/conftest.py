"""Fixtures shared by more than one test directory.

`mail_backend` (tests/imap_backends.py): the IMAP tests' storage, once per backend kind.
`relay_backend` (tests/relay_backends.py): the relay's storage, SQLite + files and PostgreSQL.
"""

import compileall
from pathlib import Path

import pytest

pytest_plugins = ["tests.imap_backends", "tests.relay_backends"]

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the project's modules once, before any test starts a `sealgate` process:
    with PYTHONDONTWRITEBYTECODE set (as on CI machines) every process would compile
    them again, a quarter of its start-up."""
    for package in ("gateway", "bridge", "sealgate_templates"):
        compileall.compile_dir(ROOT / package, quiet=1)
