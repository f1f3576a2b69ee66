"""A failing mail store, seen over a real socket with imaplib: tagged NO [UNAVAILABLE] while
the database is locked (SQLite, PostgreSQL), NO [SERVERBUG] while its schema is broken;
never BYE, and the same session works again once the store does."""

from __future__ import annotations

import imaplib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text

from bridge.keys import AccountKeys, KdfCost, seal_seed
from gateway.imap.config import ImapConfig
from gateway.keyring import KeyRing
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.mailbox import MailboxStore, StoreAuthenticator
from tests.integration.test_imap_server import ServerThread
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration

USER = "alice@example.org"
PASSWORD = "correct horse battery"
MESSAGE = b"From: bob@example.org\r\nSubject: Lunch\r\n\r\nNoon?\r\n"
UNAVAILABLE = b"[UNAVAILABLE] The mail store is busy or unreachable; try again."
SERVERBUG = b"[SERVERBUG] The mail store failed."


def login(server: ServerThread) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    assert client.login(USER, PASSWORD)[0] == "OK"
    assert client.select("INBOX") == ("OK", [b"2"])
    return client


@dataclass
class Gateway:
    database: Path
    engine: Engine
    server: ServerThread

    def client(self) -> imaplib.IMAP4:
        return login(self.server)

    def sql(self, *statements: str) -> None:
        """Run statements in a connection of their own (another process, as it were)."""
        other = sqlite3.connect(self.database, isolation_level=None)
        try:
            for statement in statements:
                other.execute(statement)
        finally:
            other.close()


def serve(engine: Engine) -> ServerThread:
    """USER with two messages in the store on `engine`, served by an ImapServer."""
    accounts, mailboxes = AccountStore(engine), MailboxStore(engine)
    keys = AccountKeys.generate()
    sealed = seal_seed(keys.seed, PASSWORD.encode(), KdfCost.minimum())
    accounts.add(USER, sealed, keys.public, ("https://relay.example",))
    for _ in range(2):
        mailboxes.deliver(USER, keys, "INBOX", MESSAGE, internal_date=datetime.now(UTC))
    authenticator = StoreAuthenticator(KeyRing(accounts), mailboxes)
    return ServerThread(ImapConfig(), authenticator, None)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A SQLite store whose connections give up on a lock after 50 ms (not the store's
    30 s), served as `serve` does."""
    database = tmp_path / "gateway.db"
    engine = open_engine(f"sqlite:///{database}")
    event.listen(
        engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout = 50"), insert=True
    )
    engine.dispose()  # the pool's first connections were opened before the listener
    server = serve(engine)
    try:
        yield Gateway(database, engine, server)
    finally:
        server.close()
        engine.dispose()


def test_a_locked_database_is_unavailable_and_the_session_goes_on(gateway: Gateway):
    client = gateway.client()
    writer = sqlite3.connect(gateway.database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        assert client.store("1", "+FLAGS", "(\\Flagged)") == ("NO", [UNAVAILABLE])
        assert client.fetch("1", "(BODY[])") == ("NO", [UNAVAILABLE])  # would set \Seen
        typ, data = client.fetch("1", "(BODY.PEEK[])")  # readers are not blocked (WAL)
        assert typ == "OK" and data[0][1] == MESSAGE
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert client.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert client.fetch("1", "(FLAGS)") == ("OK", [b"1 (FLAGS (\\Flagged \\Recent))"])

    # Now readers are shut out too: an exclusive lock, which SQLite grants only while no
    # other connection has the database open (so the gateway's idle ones are let go).
    gateway.engine.dispose()
    locker = sqlite3.connect(gateway.database, isolation_level=None)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("UPDATE folder SET highest_modseq = highest_modseq")
    locker.execute("COMMIT")  # the exclusive lock stays until the connection closes
    try:
        assert client.fetch("1:*", "(BODY.PEEK[])") == ("NO", [UNAVAILABLE])
        assert client.search(None, "TEXT", "noon") == ("NO", [UNAVAILABLE])
        assert client.noop() == ("NO", [UNAVAILABLE])
        assert client.status("INBOX", "(MESSAGES)") == ("NO", [UNAVAILABLE])
    finally:
        locker.close()
    typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
    assert typ == "OK" and [d[1] for d in data if isinstance(d, tuple)] == [MESSAGE, MESSAGE]
    assert client.search(None, "TEXT", "noon") == ("OK", [b"1 2"])
    assert client.logout()[0] == "BYE"


def test_a_broken_schema_is_a_server_bug_and_the_session_goes_on(gateway: Gateway):
    client = gateway.client()
    gateway.sql("ALTER TABLE message RENAME COLUMN sealed TO sealed_elsewhere")
    try:
        # the snapshot reads no message column, so this fails while FETCH answers
        assert client.fetch("1:*", "(UID BODY.PEEK[])") == ("NO", [SERVERBUG])
        assert client.fetch("1:*", "(UID)") == ("OK", [b"1 (UID 1)", b"2 (UID 2)"])
    finally:
        gateway.sql("ALTER TABLE message RENAME COLUMN sealed_elsewhere TO sealed")
    typ, data = client.fetch("2", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == MESSAGE
    assert client.logout()[0] == "BYE"


def test_a_locked_postgresql_table_is_unavailable_and_the_session_goes_on():
    with fresh_schema("sg_imap_errors") as url:
        engine = open_engine(url + "%20-clock_timeout%3D200")  # give up on a lock after 0.2 s
        locker = create_engine(url)
        server = serve(engine)
        try:
            client = login(server)
            with locker.connect() as connection:
                transaction = connection.begin()
                connection.execute(text("LOCK TABLE message IN ACCESS EXCLUSIVE MODE"))
                assert client.fetch("1:*", "(BODY.PEEK[])") == ("NO", [UNAVAILABLE])
                assert client.store("2", "+FLAGS", "(\\Seen)") == ("NO", [UNAVAILABLE])
                transaction.rollback()
            typ, data = client.fetch("1:*", "(BODY.PEEK[])")
            assert typ == "OK" and [d[1] for d in data if isinstance(d, tuple)] == [MESSAGE] * 2
            assert client.logout()[0] == "BYE"
        finally:
            server.close()
            engine.dispose()
            locker.dispose()
