"""INTERNALDATE keeps the zone it was given in (RFC 3501 2.3.3, 6.4.4), over real sockets on
each backend: FETCH returns the date as APPENDed, SEARCH BEFORE/ON/SINCE compare the day in
that zone (as Dovecot does, and imaptest's search-intdate expects), and COPY and MOVE carry
the zone along.

`backend` is USER's account with LUNCH and NEWS in INBOX (`test_imap_server.seed_inbox`).
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_concurrency import logged_in
from tests.integration.test_imap_server import ServerThread, make_server, seed_inbox

pytestmark = pytest.mark.integration

NOTE = b"From: alice@example.org\r\nSubject: Late\r\n\r\nJust before midnight.\r\n"
# 04:30 on 2 January in UTC: a UTC-only store would put it on the wrong day.
LATE = '"01-Jan-2025 23:30:00 -0500"'


@pytest.fixture
def server(mail_backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(seed_inbox(mail_backend), None)
    yield running
    running.close()


def dates(client: imaplib.IMAP4, uids: str) -> list[bytes]:
    typ, data = client.uid("FETCH", uids, "(INTERNALDATE)")
    assert typ == "OK", data
    return [line.split(b"INTERNALDATE ", 1)[1].rstrip(b")") for line in data
            if isinstance(line, bytes)]


def search(client: imaplib.IMAP4, *criteria: str) -> list[bytes]:
    typ, data = client.uid("SEARCH", *criteria)
    assert typ == "OK", data
    return data[0].split()


def test_internaldate_keeps_its_zone_for_fetch_search_copy_and_move(server: ServerThread):
    client = logged_in(server.port, "Drafts")
    try:
        typ, _ = client.append("Drafts", None, LATE, NOTE)
        assert typ == "OK"
        assert dates(client, "1") == [LATE.encode()]
        # The header-sync shape renders INTERNALDATE on its own path.
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE "
                                              "BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and isinstance(data[0], tuple)
        assert b"INTERNALDATE " + LATE.encode() in data[0][0]

        assert search(client, "ON", "1-Jan-2025") == [b"1"]
        assert search(client, "ON", "2-Jan-2025") == []
        assert search(client, "BEFORE", "2-Jan-2025") == [b"1"]
        assert search(client, "SINCE", "2-Jan-2025") == []
        assert search(client, "SINCE", "1-Jan-2025") == [b"1"]

        assert client.uid("COPY", "1", "Trash")[0] == "OK"
        assert client.uid("MOVE", "1", "Archive")[0] == "OK"
        for folder in ("Trash", "Archive"):
            other = logged_in(server.port, folder)  # a fresh session reads the stored rows
            try:
                assert dates(other, "1:*")[-1] == LATE.encode()
                assert search(other, "ON", "1-Jan-2025") != []
            finally:
                other.logout()
    finally:
        client.logout()


def test_zone_east_of_utc_and_one_with_minutes(server: ServerThread):
    client = logged_in(server.port, "Drafts")
    try:
        # 18:15 on 31 December in UTC, and a zone of +05:45 (Nepal).
        early, odd = '"01-Jan-2025 00:15:00 +0600"', '"15-Jun-2024 12:00:00 +0545"'
        assert client.append("Drafts", None, early, NOTE)[0] == "OK"
        assert client.append("Drafts", None, odd, NOTE)[0] == "OK"
        assert dates(client, "1:2") == [early.encode(), odd.encode()]
        assert search(client, "ON", "1-Jan-2025") == [b"1"]
        assert search(client, "ON", "31-Dec-2024") == []
        assert search(client, "ON", "15-Jun-2024") == [b"2"]
    finally:
        client.logout()
