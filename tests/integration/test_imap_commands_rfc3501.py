"""RFC 3501 command rules over a raw socket, on each backend: what a client must be told,
line by line (imaplib hides the order and the untagged data).

STORE (+/-FLAGS, .SILENT, keywords, PERMANENTFLAGS with \\*), EXPUNGE numbering, CLOSE
expunging silently, EXAMINE read-only, COPY into a missing folder, CREATE with a trailing
separator, DELETE of a superior, RENAME INBOX, LIST and LSUB patterns with references,
modified UTF-7 names, and commands in the wrong state or unknown: BAD, never a drop.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_server import (
    NOTE,
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def raw(mail_backend: MailBackend) -> Iterator[Raw]:
    """A raw connection, logged in, to USER's account: LUNCH, NEWS and NOTE in INBOX."""
    seed_inbox(mail_backend)
    mail_backend.deliver(USER, "INBOX", NOTE)
    server: ServerThread = make_server(mail_backend, None)
    connection = Raw(server.port)
    try:
        assert say(connection, f'l LOGIN {USER} "{PASSWORD}"')[-1].startswith("l OK")
        yield connection
    finally:
        connection.close()
        server.close()


def say(raw: Raw, line: str) -> list[str]:
    """Send one command; its responses as text lines, CRLF removed."""
    tag = line.split(" ", 1)[0].encode()
    raw.send(line.encode() + b"\r\n")
    return [r.decode().rstrip("\r\n") for r in raw.until_tagged(tag)]


def test_store_expunge_and_close(raw: Raw):
    selected = say(raw, "s SELECT INBOX")
    assert (
        "* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)] "
        "Flags permitted." in selected
    )
    assert say(raw, "a STORE 1 FLAGS (\\Flagged $Work)") == [
        "* FLAGS ($Work \\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        "* OK [PERMANENTFLAGS ($Work \\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)] "
        "Flags permitted.",
        "* 1 FETCH (UID 1 FLAGS ($Work \\Flagged \\Recent))",
        "a OK STORE completed.",
    ]
    assert say(raw, "b STORE 1 -FLAGS.SILENT ($Work)") == ["b OK STORE completed."]
    assert say(raw, "c STORE 1:3 +FLAGS.SILENT (\\Deleted)") == ["c OK STORE completed."]
    assert say(raw, "d STORE 2 -FLAGS (\\Deleted)") == [
        "* 2 FETCH (UID 2 FLAGS (\\Recent \\Seen))",
        "d OK STORE completed.",
    ]
    # Each EXPUNGE numbers the messages as they are after the ones before it.
    assert say(raw, "e EXPUNGE") == ["* 3 EXPUNGE", "* 1 EXPUNGE", "e OK EXPUNGE completed."]
    assert say(raw, "f FETCH 1:* (UID)") == ["* 1 FETCH (UID 2)", "f OK FETCH completed."]
    assert say(raw, "g STORE 1 +FLAGS.SILENT (\\Deleted)") == ["g OK STORE completed."]
    assert say(raw, "h CLOSE") == ["h OK CLOSE completed."]  # expunges, says nothing
    assert say(raw, "i STATUS INBOX (MESSAGES)") == [
        '* STATUS "INBOX" (MESSAGES 0)',
        "i OK STATUS completed.",
    ]
    assert say(raw, "j FETCH 1 FLAGS") == ["j BAD No mailbox selected."]


def test_examine_is_read_only(raw: Raw):
    examined = say(raw, "x EXAMINE INBOX")
    assert examined[-1] == "x OK [READ-ONLY] EXAMINE completed."
    assert "* OK [PERMANENTFLAGS ()] Flags permitted." in examined
    assert say(raw, "a STORE 1 +FLAGS (\\Seen)") == [
        "a NO [READ-ONLY] Mailbox is read-only."
    ]
    assert say(raw, "b EXPUNGE") == ["b NO [READ-ONLY] Mailbox is read-only."]
    # BODY[] in a read-only mailbox sets no \Seen, so no FLAGS comes with it.
    assert say(raw, "c FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")[:2] == [
        "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}",
        "Subject: Lunch",
    ]
    assert say(raw, "d FETCH 1 FLAGS") == ["* 1 FETCH (FLAGS (\\Recent))", "d OK FETCH completed."]
    assert say(raw, "e COPY 1 Nowhere") == ["e NO [TRYCREATE] No such mailbox; create it first."]
    assert say(raw, "f CLOSE") == ["f OK CLOSE completed."]  # no expunge in read-only


def test_folders_hierarchy_and_names(raw: Raw):
    assert say(raw, "a CREATE Projects/") == ["a OK CREATE completed."]  # separator dropped
    assert say(raw, "b CREATE Projects/2024/Q1") == ["b OK CREATE completed."]
    assert say(raw, 'c LIST "" Projects/%') == [
        '* LIST (\\Noselect \\HasChildren) "/" "Projects/2024"',
        "c OK LIST completed.",
    ]
    assert say(raw, "d LIST Projects/ *") == [
        '* LIST (\\Noselect \\HasChildren) "/" "Projects/2024"',
        '* LIST (\\HasNoChildren) "/" "Projects/2024/Q1"',
        "d OK LIST completed.",
    ]
    assert say(raw, 'e LIST "" ""') == ['* LIST (\\Noselect) "/" ""', "e OK LIST completed."]
    assert say(raw, "f DELETE Projects") == ["f OK DELETE completed."]  # inferiors stay
    assert say(raw, 'g LIST "" Projects') == [
        '* LIST (\\Noselect \\HasChildren) "/" "Projects"',
        "g OK LIST completed.",
    ]
    assert say(raw, "h DELETE Projects/2024")[0].startswith("h NO [HASCHILDREN]")
    assert say(raw, "i SUBSCRIBE Projects/2024/Q1") == ["i OK SUBSCRIBE completed."]
    assert say(raw, 'j LSUB "" Projects/%') == [
        '* LSUB (\\Noselect) "/" "Projects/2024"',
        "j OK LSUB completed.",
    ]
    assert say(raw, "k CREATE &ZeVnLIqe-") == ["k OK CREATE completed."]  # 日本語
    assert say(raw, 'l LIST "" &ZeVnLIqe-') == [
        '* LIST (\\HasNoChildren) "/" "&ZeVnLIqe-"',
        "l OK LIST completed.",
    ]
    assert say(raw, "m CREATE &ZeVnLIqe") == [
        "m BAD Invalid mailbox name: unterminated modified UTF-7 shift"
    ]
    assert say(raw, "n CREATE A&B-") == ["n BAD Invalid mailbox name: invalid modified UTF-7"]

    assert say(raw, "o RENAME INBOX Old") == ["o OK RENAME completed."]
    assert say(raw, "p STATUS INBOX (MESSAGES UIDNEXT)") == [
        '* STATUS "INBOX" (MESSAGES 0 UIDNEXT 4)',
        "p OK STATUS completed.",
    ]
    assert say(raw, "q STATUS Old (MESSAGES)") == [
        '* STATUS "Old" (MESSAGES 3)',
        "q OK STATUS completed.",
    ]


def test_wrong_state_unknown_and_broken_commands_get_bad_and_the_session_goes_on(raw: Raw):
    assert say(raw, "a EXPUNGE") == ["a BAD No mailbox selected."]
    assert say(raw, f'b LOGIN {USER} x') == ["b BAD Already logged in."]
    assert say(raw, "c FROBNICATE") == ["c BAD Unknown command FROBNICATE"]
    assert say(raw, "d SELECT") == ["d BAD Incomplete SELECT command: arguments are missing"]
    assert say(raw, "e STATUS INBOX (BOGUS)") == ["e BAD Unknown status item BOGUS."]
    assert say(raw, "f SELECT INBOX")[-1] == "f OK [READ-WRITE] SELECT completed."
    assert say(raw, "g FETCH 9 FLAGS") == ["g BAD No such message sequence number"]
    assert say(raw, "h FETCH 1 (FLAGS BOGUS)") == ["h BAD Unknown fetch attribute BOGUS"]
    assert say(raw, "i SEARCH CC jörg") == ["i BAD 8-bit characters must be sent in a literal"]
    assert say(raw, "j NOOP") == ["j OK NOOP completed."]
