"""IMAP extensions over real sockets, on each backend in turn: ESEARCH (RFC 4731), BINARY
(RFC 3516), QUOTA (RFC 9208), LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and the
SPECIAL-USE selection (RFC 6154), CHILDREN, and NAMESPACE, ID and UNSELECT as their RFCs
say; each with its bad input. Raw sockets show the exact octets; imaplib checks that a
common client reads them.

Most tests start from `seed_inbox` (LUNCH unseen and NEWS seen in INBOX); the LIST tests
from a folder tree of their own (`tree`). The servers allow plain LOGIN without TLS.
"""

from __future__ import annotations

import base64
import imaplib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_server import (
    LUNCH,
    NEWS,
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration

BLOB = bytes(range(256)) * 3  # every octet, NUL included
ATTACHED = (
    b"From: bob@example.org\r\n"
    b"Subject: Attached\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 soft=\r\nbreak\r\n"
    b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(BLOB).replace(b"\n", b"\r\n") + b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--b--\r\n"
)
QP_TEXT = "café softbreak".encode()


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


def start(backend: MailBackend, **config: Any) -> ServerThread:
    return make_server(backend, None, **config)


@pytest.fixture
def server(backend: MailBackend) -> Iterator[ServerThread]:
    running = start(backend)
    yield running
    running.close()


@pytest.fixture
def quota_server(backend: MailBackend) -> Iterator[ServerThread]:
    """Room for 3 messages and 4 KiB (the seeded two take about 1 KiB)."""
    running = start(backend, quota_messages=3, quota_storage=4096)
    yield running
    running.close()


def session(port: int, select: str | None = "INBOX") -> Raw:
    raw = Raw(port)
    raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    assert raw.until_tagged(b"l")[-1].startswith(b"l OK")
    if select is not None:
        raw.send(f"s SELECT {select}\r\n".encode())
        assert raw.until_tagged(b"s")[-1].startswith(b"s OK")
    return raw


def ask(raw: Raw, tag: str, command: str | bytes) -> list[bytes]:
    """Send `tag command` and return every line up to the tagged one."""
    data = command if isinstance(command, bytes) else command.encode()
    raw.send(tag.encode() + b" " + data + b"\r\n")
    return raw.until_tagged(tag.encode())


def test_capability_lists_the_extensions(server: ServerThread):
    with imaplib.IMAP4("127.0.0.1", server.port) as client:
        for name in (
            "ESEARCH", "BINARY", "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",
            "LIST-EXTENDED", "LIST-STATUS", "CHILDREN", "SPECIAL-USE", "NAMESPACE", "ID",
            "UNSELECT",
        ):
            assert name in client.capabilities


# -- ESEARCH


def test_esearch_return_options(server: ServerThread, backend: MailBackend):
    for flags in ((), ("\\Seen",), ("\\Seen",), ()):
        backend.deliver(USER, "INBOX", NEWS, flags=flags)  # UIDs 3-6; 3 and 6 unseen
    raw = session(server.port)
    assert ask(raw, "a1", "SEARCH RETURN (MIN MAX COUNT ALL) ALL") == [
        b'* ESEARCH (TAG "a1") MIN 1 MAX 6 COUNT 6 ALL 1:6\r\n',
        b"a1 OK SEARCH completed.\r\n",
    ]
    assert ask(raw, "a2", "UID SEARCH RETURN () UNSEEN")[0] == (
        b'* ESEARCH (TAG "a2") UID ALL 1,3,6\r\n'
    )
    assert ask(raw, "a3", "SEARCH RETURN (COUNT MIN) SEEN")[0] == (
        b'* ESEARCH (TAG "a3") COUNT 3 MIN 2\r\n'
    )
    # nothing matched: MIN, MAX and ALL are left out, COUNT is 0
    assert ask(raw, "a4", "UID SEARCH RETURN (MIN MAX ALL COUNT) DELETED")[0] == (
        b'* ESEARCH (TAG "a4") UID COUNT 0\r\n'
    )
    assert ask(raw, "a5", "SEARCH RETURN (MAX) CHARSET UTF-8 SUBJECT News")[0] == (
        b'* ESEARCH (TAG "a5") MAX 6\r\n'
    )
    assert ask(raw, "a6", "SEARCH ALL")[0] == b"* SEARCH 1 2 3 4 5 6\r\n"  # plain stays plain
    raw.close()


# -- BINARY


def test_binary_decodes_parts(server: ServerThread, backend: MailBackend):
    backend.deliver(USER, "INBOX", ATTACHED)  # UID 3
    raw = session(server.port)
    lines = ask(raw, "f1", "UID FETCH 3 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.SIZE[2])")
    assert lines[0] == (
        b"* 3 FETCH (UID 3 BINARY[1] {%d}\r\n" % len(QP_TEXT)
    )
    assert b"".join(lines[1:]) == (
        QP_TEXT + b" BINARY.SIZE[1] %d BINARY.SIZE[2] %d)\r\n" % (len(QP_TEXT), len(BLOB))
        + b"f1 OK FETCH completed.\r\n"
    )
    # NUL in the data: a literal8
    data = b"".join(ask(raw, "f2", "FETCH 3 (BINARY.PEEK[2])"))
    assert data == b"* 3 FETCH (BINARY[2] ~{%d}\r\n" % len(BLOB) + BLOB + (
        b")\r\nf2 OK FETCH completed.\r\n"
    )
    data = b"".join(ask(raw, "f3", "FETCH 3 (BINARY.PEEK[2]<1.3>)"))
    assert data == b"* 3 FETCH (BINARY[2]<1> {3}\r\n\x01\x02\x03)\r\nf3 OK FETCH completed.\r\n"
    data = b"".join(ask(raw, "f4", "FETCH 3 (BINARY.PEEK[2]<0.2>)"))
    assert data.startswith(b"* 3 FETCH (BINARY[2]<0> ~{2}\r\n\x00\x01)")
    data = b"".join(ask(raw, "f5", "FETCH 1 (BINARY.PEEK[] BINARY.PEEK[9])"))
    assert data == b"* 1 FETCH (BINARY[] {%d}\r\n" % len(LUNCH) + LUNCH + (
        b' BINARY[9] "")\r\nf5 OK FETCH completed.\r\n'
    )
    assert backend.flags(USER, "INBOX", 3) == frozenset()
    ask(raw, "f6", "FETCH 3 (BINARY[1])")  # no PEEK: sets \Seen
    assert backend.flags(USER, "INBOX", 3) == frozenset({"\\Seen"})
    raw.close()

    with imaplib.IMAP4("127.0.0.1", server.port) as client:
        client.login(USER, PASSWORD)
        client.select("INBOX")
        typ, data = client.uid("FETCH", "3", "(BINARY.PEEK[2])")
        assert typ == "OK"
        assert data[0] == (b"3 (UID 3 BINARY[2] ~{%d}" % len(BLOB), BLOB)


def test_binary_unknown_transfer_encoding(server: ServerThread, backend: MailBackend):
    backend.deliver(USER, "INBOX", ATTACHED)  # UID 3
    raw = session(server.port)
    assert ask(raw, "u1", "FETCH 2:3 (UID BINARY.PEEK[3])") == [
        b"* 2 FETCH (UID 2 BINARY[3] \"\")\r\n",  # NEWS has no part 3: empty
        b"u1 NO [UNKNOWN-CTE] A part has a content transfer encoding this server cannot "
        b"decode.\r\n",
    ]
    assert ask(raw, "u2", "FETCH 3 (BINARY.SIZE[3])")[-1].startswith(b"u2 NO [UNKNOWN-CTE]")
    assert ask(raw, "u3", "FETCH 3 (BODY.PEEK[3])")[-1] == b"u3 OK FETCH completed.\r\n"
    raw.close()


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("SEARCH RETURN (SAVE) ALL", b"b BAD Unknown SEARCH return option SAVE\r\n"),
        ("SEARCH RETURN MIN ALL", b"b BAD Expected ( starting the return options\r\n"),
        ("SEARCH RETURN (MIN)", b"b BAD Incomplete SEARCH command: arguments are missing\r\n"),
        ("UID SEARCH RETURN (COUNT) FOO", b"b BAD Unknown search key FOO\r\n"),
        ("FETCH 1 (BINARY[HEADER])", b"b BAD BINARY takes a part number only\r\n"),
        ("FETCH 1 (BINARY.PEEK[1.MIME])", b"b BAD BINARY.PEEK takes a part number only\r\n"),
        ("FETCH 1 (BINARY.SIZE[1]<0.5>)", b"b BAD Expected a space\r\n"),
        ("FETCH 1 (BINARY)", b"b BAD BINARY needs a section such as [1]\r\n"),
        ("FETCH 1 (BINARY[0])", b"b BAD Invalid section part number\r\n"),
    ],
)
def test_esearch_and_binary_bad_input(server: ServerThread, command: str, answer: bytes):
    raw = session(server.port)
    assert ask(raw, "b", command) == [answer]
    raw.close()


def test_append_takes_a_literal8(server: ServerThread, backend: MailBackend):
    message = b"Subject: raw\r\nContent-Transfer-Encoding: binary\r\n\r\n" + BLOB + b"\r\n"
    raw = session(server.port, select=None)
    raw.send(b"p1 APPEND INBOX (\\Seen) ~{%d}\r\n" % len(message))
    assert raw.line() == b"+ Ready for literal data.\r\n"
    raw.send(message + b"\r\n")
    assert raw.until_tagged(b"p1")[-1].startswith(b"p1 OK [APPENDUID ")
    raw.send(b"p2 APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n")  # LITERAL+
    assert raw.until_tagged(b"p2")[-1].startswith(b"p2 OK [APPENDUID ")
    assert ask(raw, "p3", 'APPEND INBOX ~"x"') == [b"p3 BAD Expected the message as a literal\r\n"]
    ask(raw, "s", "SELECT INBOX")
    data = b"".join(ask(raw, "p4", "UID FETCH 3:4 (BINARY.SIZE[1] BINARY.PEEK[1])"))
    one = b"BINARY.SIZE[1] %d BINARY[1] ~{%d}\r\n" % (len(BLOB) + 2, len(BLOB) + 2) + BLOB
    assert data == (
        b"* 3 FETCH (UID 3 " + one + b"\r\n)\r\n* 4 FETCH (UID 4 " + one + b"\r\n)\r\n"
        b"p4 OK FETCH completed.\r\n"
    )
    raw.close()
    assert len(backend.uids(USER, "INBOX")) == 4



MIXED_BINARY = (
    b"From: bob@example.org\r\nSubject: Raw parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nstray\x00nul\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
    b"\r\n" + BLOB + b"\r\n--b--\r\n"
)


def test_binary_appended_parts_reach_body_fetches_without_nul(server: ServerThread):
    """RFC 3516 4.3 and RFC 3501 CHAR8, as Dovecot does it: a binary part APPENDed as a
    literal8 is kept in base64, so BODY[], RFC822 and BODYSTRUCTURE show base64 while
    BINARY[2] gives the octets back; a NUL in a part not labelled binary is sent as 0x80."""
    raw = session(server.port)
    raw.send(b"a APPEND INBOX ~{%d+}\r\n" % len(MIXED_BINARY) + MIXED_BINARY + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK [APPENDUID ")
    ask(raw, "n", "NOOP")
    for item in ("BODY.PEEK[]", "RFC822", "BODY.PEEK[2]", "BODY.PEEK[1]", "BODY.PEEK[TEXT]"):
        data = b"".join(ask(raw, "f", f"UID FETCH 3 ({item})"))
        assert b"\x00" not in data and b"~{" not in data, item
        assert data.endswith(b"f OK FETCH completed.\r\n")
    body = b"".join(ask(raw, "f", "UID FETCH 3 (BODY.PEEK[2] BODY.PEEK[1])"))
    encoded = base64.encodebytes(BLOB).rstrip(b"\n").replace(b"\n", b"\r\n")
    assert b"BODY[2] {%d}\r\n%b" % (len(encoded), encoded) in body
    assert b"BODY[1] {9}\r\nstray\x80nul" in body
    structure = b"".join(ask(raw, "f", "UID FETCH 3 (BODYSTRUCTURE)"))
    assert b'("application" "octet-stream" NIL NIL NIL "base64" %d' % len(encoded) in structure
    data = b"".join(ask(raw, "f", "UID FETCH 3 (BINARY.SIZE[2] BINARY.PEEK[2])"))
    assert b"BINARY.SIZE[2] %d BINARY[2] ~{%d}\r\n%b)" % (len(BLOB), len(BLOB), BLOB) in data
    # A synchronizing literal8 is kept the same way.
    raw.send(b"c APPEND INBOX ~{%d}\r\n" % len(MIXED_BINARY))
    assert raw.line() == b"+ Ready for literal data.\r\n"
    raw.send(MIXED_BINARY + b"\r\n")
    assert raw.until_tagged(b"c")[-1].startswith(b"c OK [APPENDUID ")
    again = b"".join(ask(raw, "f", "UID FETCH 4 (BODYSTRUCTURE)"))
    assert again.replace(b"* 4 FETCH (UID 4", b"") == structure.replace(b"* 3 FETCH (UID 3", b"")
    # The same octets sent as a plain literal (no NUL allowed there) are kept as sent.
    plain = MIXED_BINARY.replace(b"\x00", b"")
    raw.send(b"b APPEND INBOX {%d+}\r\n" % len(plain) + plain + b"\r\n")
    assert raw.until_tagged(b"b")[-1].startswith(b"b OK [APPENDUID ")
    data = b"".join(ask(raw, "f", "UID FETCH 5 (BODY.PEEK[])"))
    assert b"{%d}\r\n%b)" % (len(plain), plain) in data
    raw.close()


# -- QUOTA


def test_quota_reports_usage(quota_server: ServerThread, backend: MailBackend):
    kib = -(-(len(LUNCH) + len(NEWS)) // 1024)
    raw = session(quota_server.port, select=None)
    assert ask(raw, "q1", "GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT "INBOX" ""\r\n',
        b'* QUOTA "" (STORAGE %d 4 MESSAGE 2 3)\r\n' % kib,
        b"q1 OK GETQUOTAROOT completed.\r\n",
    ]
    backend.deliver(USER, "Sent", NOTE_OF_1500)  # every folder counts
    assert ask(raw, "q2", 'GETQUOTA ""') == [
        b'* QUOTA "" (STORAGE %d 4 MESSAGE 3 3)\r\n'
        % -(-(len(LUNCH) + len(NEWS) + len(NOTE_OF_1500)) // 1024),
        b"q2 OK GETQUOTA completed.\r\n",
    ]
    assert ask(raw, "q3", 'GETQUOTA "other"') == [b"q3 NO [NONEXISTENT] No such quota root.\r\n"]
    assert ask(raw, "q4", "GETQUOTAROOT Nowhere") == [b"q4 NO [NONEXISTENT] No such mailbox.\r\n"]
    assert ask(raw, "q5", 'SETQUOTA "" (STORAGE 512)') == [
        b"q5 NO [NOPERM] Quotas are set by the administrator.\r\n"
    ]
    assert ask(raw, "q6", "SETQUOTA \"\" (STORAGE)")[0].startswith(b"q6 BAD ")
    assert ask(raw, "q7", "GETQUOTA")[0].startswith(b"q7 BAD ")
    assert ask(raw, "q8", "SETQUOTA \"\" (STORAGE 99999999999999999999)") == [
        b"q8 BAD Number out of range\r\n"
    ]
    # what EXPUNGE would free (RFC 9208 STATUS DELETED-STORAGE, in KiB)
    ask(raw, "s", "SELECT INBOX")
    ask(raw, "d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert ask(raw, "q9", "STATUS INBOX (DELETED DELETED-STORAGE MESSAGES)")[0] == (
        b'* STATUS "INBOX" (DELETED 1 DELETED-STORAGE %d MESSAGES 2)\r\n'
        % -(-len(LUNCH) // 1024)
    )
    raw.close()

    with imaplib.IMAP4("127.0.0.1", quota_server.port) as client:
        client.login(USER, PASSWORD)
        typ, data = client.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b'"INBOX" ""']


NOTE_OF_1500 = b"Subject: note\r\n\r\n" + b"x" * 1500 + b"\r\n"


def test_over_quota_append_and_copy_answer_overquota(
    quota_server: ServerThread, backend: MailBackend
):
    with imaplib.IMAP4("127.0.0.1", quota_server.port) as client:
        client.login(USER, PASSWORD)
        assert client.append("Drafts", "", None, NEWS)[0] == "OK"  # the third message
        typ, data = client.append("Drafts", "", None, NEWS)
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        client.select("INBOX")
        typ, data = client.copy("1", "Trash")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        assert client.uid("MOVE", "2", "Trash")[0] == "OK"  # moving adds nothing
    assert len(backend.uids(USER, "Drafts")) == 1
    assert backend.uids(USER, "Trash") == [1]


def test_over_quota_storage(backend: MailBackend):
    limit = len(LUNCH) + len(NEWS) + len(NOTE_OF_1500) - 1
    running = start(backend, quota_storage=limit)
    try:
        with imaplib.IMAP4("127.0.0.1", running.port) as client:
            client.login(USER, PASSWORD)
            typ, data = client.append("INBOX", "", None, NOTE_OF_1500)
            assert typ == "NO" and data[0] == b"[OVERQUOTA] Over the account's quota."
            assert client.append("INBOX", "", None, NOTE_OF_1500[:-2])[0] == "OK"  # just fits
            typ, data = client.getquotaroot("INBOX")
            used = -(-(limit - 1) // 1024)
            # no MESSAGE limit: not reported
            assert data[1] == [b'"" (STORAGE %d %d)' % (used, -(-limit // 1024))]
    finally:
        running.close()


def test_no_quota_configured(server: ServerThread):
    raw = session(server.port, select=None)
    assert ask(raw, "q1", "GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT "INBOX"\r\n',
        b"q1 OK GETQUOTAROOT completed.\r\n",
    ]
    assert ask(raw, "q2", 'GETQUOTA ""') == [b"q2 NO [NONEXISTENT] No such quota root.\r\n"]
    raw.close()


# -- LIST-EXTENDED, LIST-STATUS, SPECIAL-USE


@pytest.fixture
def tree(mail_backend: MailBackend) -> MailBackend:
    """Folders Work, Work/Reports, Projects/Alpha (no Projects) beside the standard ones;
    subscribed: Work/Reports, Gone (no such folder), INBOX."""
    mail_backend.add_account(USER, PASSWORD, ["Work", "Work/Reports", "Projects/Alpha"])
    mail_backend.deliver(USER, "INBOX", LUNCH)
    mail_backend.deliver(USER, "INBOX", NEWS, flags=("\\Seen",))
    mail_backend.deliver(USER, "Work/Reports", NEWS)
    session = mail_backend.other_session(USER)
    for name in session.list_subscribed():
        session.unsubscribe(name)
    for name in ("Work/Reports", "Gone", "INBOX"):
        session.subscribe(name)
    return mail_backend


@pytest.fixture
def tree_server(tree: MailBackend) -> Iterator[ServerThread]:
    running = start(tree)
    yield running
    running.close()


def listed(lines: list[bytes]) -> list[bytes]:
    return [line.removesuffix(b"\r\n") for line in lines[:-1]]


def test_list_special_use_selection_and_return(tree_server: ServerThread):
    raw = session(tree_server.port, select=None)
    lines = ask(raw, "l1", 'LIST (SPECIAL-USE) "" *')
    assert lines[-1] == b"l1 OK LIST completed.\r\n"
    special = listed(lines)
    for line in (
        b'* LIST (\\Sent \\HasNoChildren) "/" "Sent"',
        b'* LIST (\\Drafts \\HasNoChildren) "/" "Drafts"',
        b'* LIST (\\Trash \\HasNoChildren) "/" "Trash"',
    ):
        assert line in special
    assert not any(b'"INBOX"' in line or b'"Work' in line for line in special)
    everything = listed(ask(raw, "l2", 'LIST "" * RETURN (SPECIAL-USE)'))
    assert set(special) < set(everything)
    assert listed(ask(raw, "l3", 'LIST "" *')) == [
        line.replace(b"\\NonExistent", b"\\Noselect") for line in everything
    ]
    assert listed(ask(raw, "l4", 'LIST (SPECIAL-USE) "" Work*')) == []
    raw.close()


def test_list_subscribed_recursivematch_and_nonexistent(tree_server: ServerThread):
    raw = session(tree_server.port, select=None)
    assert listed(ask(raw, "l1", 'LIST (SUBSCRIBED) "" *')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Work/Reports"',
    ]
    assert listed(ask(raw, "l2", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"',
        b'* LIST (\\HasChildren) "/" "Work" ("CHILDINFO" ("SUBSCRIBED"))',
    ]
    assert listed(ask(raw, "l3", 'LIST (SUBSCRIBED REMOTE) "" W%')) == []
    assert listed(ask(raw, "l4", 'LIST (REMOTE) "" Work/%')) == [
        b'* LIST (\\HasNoChildren) "/" "Work/Reports"',
    ]
    top = listed(ask(raw, "l5", 'LIST "" % RETURN (SUBSCRIBED CHILDREN)'))
    for line in (
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\NonExistent \\HasChildren) "/" "Projects"',
        b'* LIST (\\Trash \\HasNoChildren) "/" "Trash"',
        b'* LIST (\\HasChildren) "/" "Work"',
    ):
        assert line in top
    assert not any(b"Gone" in line or b"/Reports" in line for line in top)
    # plain LIST keeps RFC 3501's \Noselect for a superior that is not a folder
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Projects"\r\n' in ask(raw, "l6", 'LIST "" %')
    raw.close()


def test_list_several_patterns_and_status(tree_server: ServerThread):
    raw = session(tree_server.port, select=None)
    assert listed(ask(raw, "l1", 'LIST "" ("INBOX" "Sent" "inbox")')) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\Sent \\HasNoChildren) "/" "Sent"',
    ]
    command = 'LIST "" (Projects* Work/%) RETURN (STATUS (MESSAGES UNSEEN))'
    assert listed(ask(raw, "l2", command)) == [
        b'* LIST (\\NonExistent \\HasChildren) "/" "Projects"',
        b'* LIST (\\HasNoChildren) "/" "Projects/Alpha"',
        b'* STATUS "Projects/Alpha" (MESSAGES 0 UNSEEN 0)',
        b'* LIST (\\HasNoChildren) "/" "Work/Reports"',
        b'* STATUS "Work/Reports" (MESSAGES 1 UNSEEN 1)',
    ]
    assert listed(ask(raw, "l3", 'LIST () "" INBOX RETURN (STATUS (UIDNEXT MESSAGES))')) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (UIDNEXT 3 MESSAGES 2)',
    ]
    assert listed(ask(raw, "l4", 'LIST () "" ""')) == [b'* LIST (\\Noselect) "/" ""']
    raw.close()

    with imaplib.IMAP4("127.0.0.1", tree_server.port) as client:
        client.login(USER, PASSWORD)
        typ, data = client.list('""', "INBOX RETURN (STATUS (MESSAGES))")
        assert typ == "OK"
        assert data == [b'(\\HasNoChildren) "/" "INBOX"']
        assert client.untagged_responses.get("STATUS") == [b'"INBOX" (MESSAGES 2)']


RECURSIVEMATCH_ALONE = b"b BAD RECURSIVEMATCH needs another selection option"


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ('LIST (RECURSIVEMATCH) "" *', RECURSIVEMATCH_ALONE),
        ('LIST (REMOTE RECURSIVEMATCH) "" *', RECURSIVEMATCH_ALONE),
        ('LIST (FOO) "" *', b"b BAD Unknown LIST selection option FOO"),
        ('LIST "" * RETURN (FOO)', b"b BAD Unknown LIST return option FOO"),
        ('LIST "" * RETURN (STATUS (FOO))', b"b BAD Unknown status item FOO."),
        ('LIST "" * RETURN (STATUS ())', b"b BAD RETURN (STATUS) needs at least one status item"),
        ('LIST "" * RETURN STATUS', b"b BAD Expected ( starting the return options"),
        ('LIST "" ()', b"b BAD Expected a mailbox pattern"),
        ('LIST "" (INBOX', b"b BAD Expected ) closing the patterns"),
        ('LIST (SUBSCRIBED "" *', b"b BAD Expected an atom"),
    ],
)
def test_list_extended_bad_input(tree_server: ServerThread, command: str, answer: bytes):
    raw = session(tree_server.port, select=None)
    assert ask(raw, "b", command) == [answer + b"\r\n"]
    raw.close()


# -- NAMESPACE, ID, UNSELECT


def test_namespace_id_unselect(server: ServerThread, backend: MailBackend):
    raw = Raw(server.port)
    assert ask(raw, "n0", "NAMESPACE") == [b"n0 BAD Log in first.\r\n"]
    assert ask(raw, "i0", 'ID ("name" "neomutt" "version" NIL)') == [
        b'* ID ("name" "Sealgate")\r\n',
        b"i0 OK ID completed.\r\n",
    ]
    assert ask(raw, "i1", "ID NIL")[0] == b'* ID ("name" "Sealgate")\r\n'
    assert ask(raw, "i2", "ID ()")[-1] == b"i2 OK ID completed.\r\n"
    assert ask(raw, "i3", f'ID ("{"k" * 31}" "v")') == [
        b"i3 BAD ID fields are at most 30 octets, values at most 1024\r\n"
    ]
    assert ask(raw, "i4", f'ID ("k" "{"v" * 1025}")')[0].startswith(b"i4 BAD ID fields")
    assert ask(raw, "i5", "ID")[0].startswith(b"i5 BAD ")
    raw.close()

    raw = session(server.port, select=None)
    assert ask(raw, "n1", "NAMESPACE") == [
        b'* NAMESPACE (("" "/")) NIL NIL\r\n',
        b"n1 OK NAMESPACE completed.\r\n",
    ]
    assert ask(raw, "n2", "NAMESPACE x") == [
        b"n2 BAD Unexpected characters at the end of the command\r\n"
    ]
    assert ask(raw, "u0", "UNSELECT") == [b"u0 BAD No mailbox selected.\r\n"]
    ask(raw, "s", "SELECT INBOX")
    assert ask(raw, "u1", "UNSELECT INBOX")[0].startswith(b"u1 BAD ")
    ask(raw, "d", "STORE 1 +FLAGS (\\Deleted)")
    assert ask(raw, "u2", "UNSELECT") == [b"u2 OK UNSELECT completed.\r\n"]
    assert ask(raw, "f", "FETCH 1 FLAGS") == [b"f BAD No mailbox selected.\r\n"]
    raw.close()
    assert backend.uids(USER, "INBOX") == [1, 2]  # UNSELECT expunges nothing
