"""\\Recent over real sockets, on each backend (RFC 3501 2.3.2, 6.3.1, 6.3.2, 6.3.10,
7.3.2): the first session to SELECT a folder holds its new messages as recent (SELECT's
RECENT, FLAGS, SEARCH RECENT/NEW/OLD, STATUS RECENT), the next one does not, EXAMINE
and STATUS take nothing, and mail arriving while a session has the folder selected is
recent in that session only (and in EXAMINE sessions, while no read-write one took it).

`backend` is USER's account with LUNCH (unseen) and NEWS (seen) in INBOX, never selected.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_concurrency import noop_untagged
from tests.integration.test_imap_server import (
    NOTE,
    PASSWORD,
    USER,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


@pytest.fixture
def server(backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(backend, None)
    yield running
    running.close()


def login(server: ServerThread) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    client.login(USER, PASSWORD)
    return client


def recent_status(client: imaplib.IMAP4) -> bytes:
    typ, data = client.status("INBOX", "(RECENT)")
    assert typ == "OK"
    return data[0]


def test_first_select_takes_recent_the_next_sees_none(server: ServerThread):
    watcher, first, second = login(server), login(server), login(server)
    try:
        assert recent_status(watcher) == b'"INBOX" (RECENT 2)'
        assert watcher.select("INBOX", readonly=True)[0] == "OK"  # EXAMINE: shows, takes none
        assert watcher.response("RECENT") == ("RECENT", [b"2"])
        assert watcher.close()[0] == "OK"
        assert recent_status(watcher) == b'"INBOX" (RECENT 2)'

        assert first.select("INBOX")[0] == "OK"
        assert first.response("RECENT") == ("RECENT", [b"2"])
        assert first.fetch("1:2", "(FLAGS)")[1] == [
            b"1 (FLAGS (\\Recent))",
            b"2 (FLAGS (\\Recent \\Seen))",
        ]
        assert first.search(None, "RECENT") == ("OK", [b"1 2"])
        assert first.search(None, "NEW") == ("OK", [b"1"])  # recent and unseen
        assert first.search(None, "OLD") == ("OK", [b""])
        assert recent_status(first) == b'"INBOX" (RECENT 2)'  # its own recent ones
        # \Recent is the server's: a STORE FLAGS keeps it, and a client cannot set it.
        assert first.store("1", "FLAGS", "(\\Flagged)")[1] == [
            b"1 (UID 1 FLAGS (\\Flagged \\Recent))"
        ]
        with pytest.raises(imaplib.IMAP4.error, match="read-only system flag"):
            first.store("1", "+FLAGS", "(\\Recent)")

        assert recent_status(second) == b'"INBOX" (RECENT 0)'
        assert second.select("INBOX")[0] == "OK"
        assert second.response("RECENT") == ("RECENT", [b"0"])
        assert second.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Flagged))"]
        assert second.search(None, "RECENT") == ("OK", [b""])
        assert second.search(None, "OLD") == ("OK", [b"1 2"])
    finally:
        for client in (watcher, first, second):
            client.logout()


def test_new_mail_is_recent_in_one_selected_session_only(
    server: ServerThread, backend: MailBackend
):
    a, b = login(server), login(server)
    try:
        assert a.select("INBOX")[0] == "OK" and b.select("INBOX")[0] == "OK"
        backend.deliver(USER, "INBOX", NOTE)
        assert noop_untagged(a) == [b"* 3 EXISTS", b"* 3 RECENT"]  # a saw it first
        assert noop_untagged(b) == [b"* 3 EXISTS", b"* 0 RECENT"]
        assert a.fetch("3", "(FLAGS)")[1] == [b"3 (FLAGS (\\Recent))"]
        assert b.fetch("3", "(FLAGS)")[1] == [b"3 (FLAGS ())"]
        a.response("RECENT")  # forget SELECT's
        assert a.copy("3", "INBOX")[0] == "OK"  # a copy is new mail too (6.4.7)
        assert a.response("RECENT") == ("RECENT", [b"4"])
        assert recent_status(b) == b'"INBOX" (RECENT 0)'
    finally:
        a.logout()
        b.logout()


def test_new_mail_is_recent_to_examine_until_a_select_takes_it(
    server: ServerThread, backend: MailBackend
):
    """A read-only session sees arriving mail as \\Recent while no read-write session
    has taken it, and takes none of it itself (RFC 3501 2.3.2, 6.3.2)."""
    a, b, c = login(server), login(server), login(server)
    try:
        assert a.select("INBOX", readonly=True)[0] == "OK"
        assert a.response("RECENT") == ("RECENT", [b"2"])
        backend.deliver(USER, "INBOX", NOTE)
        assert noop_untagged(a) == [b"* 3 EXISTS", b"* 3 RECENT"]
        assert b.append("INBOX", "", None, NOTE)[0] == "OK"  # from an unselected session
        assert noop_untagged(a) == [b"* 4 EXISTS", b"* 4 RECENT"]
        assert a.fetch("3:4", "(FLAGS)")[1] == [b"3 (FLAGS (\\Recent))", b"4 (FLAGS (\\Recent))"]
        assert a.search(None, "RECENT") == ("OK", [b"1 2 3 4"])
        assert recent_status(b) == b'"INBOX" (RECENT 4)'

        assert c.select("INBOX")[0] == "OK"  # the first read-write session takes them all
        assert c.response("RECENT") == ("RECENT", [b"4"])
        assert c.fetch("3:4", "(FLAGS)")[1] == [b"3 (FLAGS (\\Recent))", b"4 (FLAGS (\\Recent))"]
        backend.deliver(USER, "INBOX", NOTE)
        assert noop_untagged(c) == [b"* 5 EXISTS", b"* 5 RECENT"]  # c saw it first: c's
        assert noop_untagged(a) == [b"* 5 EXISTS", b"* 4 RECENT"]  # ... so not a's
        assert a.fetch("5", "(FLAGS)")[1] == [b"5 (FLAGS ())"]
    finally:
        for client in (a, b, c):
            client.logout()
