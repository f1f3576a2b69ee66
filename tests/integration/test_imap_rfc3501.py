"""RFC 3501 read side over real sockets, on each backend: ENVELOPE (raw names, NIL and
"" rules, groups, routes), BODYSTRUCTURE and BODY of nested multiparts and
message/rfc822 parts, BODY[section]<partial> inside embedded messages, and SEARCH on
address fields the way Dovecot answers them.

The server has no TLS and allows plain LOGIN; imaplib reads the answers, and raw lines
show the exact octets where imaplib would hide them.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_server import PASSWORD, USER, ServerThread, make_server

pytestmark = pytest.mark.integration


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# Parts: 1 multipart/alternative (1.1 text/plain, 1.2 text/html), 2 message/rfc822 holding
# a multipart/mixed (2.1 text/plain, 2.2 application/pdf), 3 text/plain quoted-printable.
MIXED = crlf(
    'From: "Smith, John" <john@example.com>\n'
    'To: undisclosed-recipients:;, Team: a@b.example, "B \\"Q\\"" <b@b.example>;\n'
    "Cc: =?utf-8?q?J=C3=B6rg?= <jorg@x.example>, old@style.example (Old Style)\n"
    "Bcc: <@relay.example:hidden@y.example>\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and \"quotes\" \\ back\n"
    "Sender:\n"
    "Date: Wed, 3 Jan 2024 23:30:00 -0800\n"
    "Message-ID: <m1@x.example>\n"
    "In-Reply-To:\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="mix"\n'
    "\n"
    "preamble\n"
    "--mix\n"
    'Content-Type: multipart/alternative; boundary="alt"\n'
    "\n"
    "--alt\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Language: en, de\n"
    "\n"
    "Hello world\n"
    "line two\n"
    "\n"
    "--alt\n"
    "Content-Type: text/html\n"
    "Content-Location: http://x.example/y\n"
    "\n"
    "<p>Hello</p>\n"
    "--alt--\n"
    "--mix\n"
    "Content-Type: message/rfc822\n"
    'Content-Disposition: attachment; filename="fwd.eml"\n'
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "From: inner@example.net\n"
    "Subject: Inner\n"
    "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
    'Content-Type: multipart/mixed; boundary="in"\n'
    "\n"
    "--in\n"
    "Content-Type: text/plain\n"
    "\n"
    "Inner body\n"
    "\n"
    "--in\n"
    'Content-Type: application/pdf; name="a.pdf"\n'
    "Content-Transfer-Encoding: base64\n"
    "Content-ID: <pdf@x.example>\n"
    "Content-Description: A PDF\n"
    "\n"
    "JVBERi0=\n"
    "--in--\n"
    "--mix\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "caf=E9 pr=E9f=E9r=E9\n"
    "--mix--\n"
    "epilogue\n"
)
# A message that is a message/rfc822 holding a message/rfc822 (no multipart anywhere).
TWICE = crlf(
    "From: outer@example.org\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: middle@example.org\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: inner@example.org\n"
    "Subject: innermost\n"
    "\n"
    "Hello world\n"
)
ADDRESSES = [
    crlf("From: user-from@domain.example\nTo: user-to@domain.example\n\nbody\n"),
    crlf("From: RealFrom <user-from@domain.example>\nTo: RealTo <user-to@domain.example>\n\nb\n"),
    crlf("From: <user-from (comment)@ (comment) domain.example>\n"
         "Cc: <user-cc@domain.example>\n\nb\n"),
    crlf("From: user-from@domain.example (RealFrom)\n"
         "Bcc: user-bcc@domain.example (RealBcc)\n\nb\n"),
    crlf("To: groupname: groupuser1@domain.example, groupuser2@domain.example;,\n"
         "  other: groupuser3@domain.example;\n\nb\n"),
]


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    mail_backend.add_account(USER, PASSWORD)
    for message in (MIXED, TWICE, *ADDRESSES):
        mail_backend.deliver(USER, "INBOX", message)
    return mail_backend


@pytest.fixture
def client(backend: MailBackend) -> Iterator[imaplib.IMAP4]:
    server: ServerThread = make_server(backend, None)
    connection = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        connection.login(USER, PASSWORD)
        connection.select("INBOX")
        yield connection
    finally:
        connection.logout()
        server.close()


def fetch_items(client: imaplib.IMAP4, number: int, items: str) -> dict[bytes, bytes]:
    """`BODY[...]` items of one FETCH as name -> octets (imaplib splits at literals)."""
    typ, data = client.fetch(str(number), items)
    assert typ == "OK", data
    found: dict[bytes, bytes] = {}
    for piece in data:
        if isinstance(piece, tuple):
            m = re.search(rb"(BODY\[[^\]]*\](?:<\d+>)?) \{\d+\}$", piece[0])
            assert m is not None, piece
            found[m[1]] = piece[1]
    return found


def test_envelope_keeps_names_as_sent_and_tells_absent_from_empty(client: imaplib.IMAP4):
    typ, data = client.fetch("1", "(ENVELOPE)")
    assert data[0] == (
        b'1 (ENVELOPE ("Wed, 3 Jan 2024 23:30:00 -0800" '
        b'"=?utf-8?q?Gr=C3=BC=C3=9Fe?= and \\"quotes\\" \\\\ back" '
        b'(("Smith, John" NIL "john" "example.com")) '
        b'(("Smith, John" NIL "john" "example.com")) '  # Sender empty: From
        b'(("Smith, John" NIL "john" "example.com")) '  # Reply-To absent: From
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)'
        b'(NIL NIL "Team" NIL)(NIL NIL "a" "b.example")'
        b'("B \\"Q\\"" NIL "b" "b.example")(NIL NIL NIL NIL)) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "x.example")'
        b'("Old Style" NIL "old" "style.example")) '
        b'((NIL "@relay.example" "hidden" "y.example")) '
        b'"" "<m1@x.example>"))'  # In-Reply-To present but empty: ""
    )
    typ, data = client.fetch("3", "(ENVELOPE)")
    sender = b'((NIL NIL "user-from" "domain.example"))'
    assert data[0] == (
        b"3 (ENVELOPE (NIL NIL " + sender + b" " + sender + b" " + sender + b" "
        b'((NIL NIL "user-to" "domain.example")) NIL NIL NIL NIL))'
    )


INNER_ENVELOPE = (
    b'("Mon, 1 Jan 2024 10:00:00 +0000" "Inner" ((NIL NIL "inner" "example.net")) '
    b'((NIL NIL "inner" "example.net")) ((NIL NIL "inner" "example.net")) NIL NIL NIL NIL NIL)'
)


def test_bodystructure_and_body_of_nested_parts(client: imaplib.IMAP4):
    typ, data = client.fetch("1", "(BODYSTRUCTURE)")
    assert data[0] == (
        b"1 (BODYSTRUCTURE ("
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 23 2 NIL NIL ("en" "de") NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL '
        b'"http://x.example/y") "alternative" ("boundary" "alt") NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 336 ' + INNER_ENVELOPE + b" "
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" "a.pdf") "<pdf@x.example>" "A PDF" "base64" 8 '
        b'NIL NIL NIL NIL) "mixed" ("boundary" "in") NIL NIL NIL) 18 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "fwd.eml")) NIL NIL)'
        b'("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 20 0 '
        b'NIL NIL NIL NIL) "mixed" ("boundary" "mix") NIL NIL NIL))'
    )
    typ, data = client.fetch("1", "(BODY)")  # no extension data, at any depth
    assert data[0] == (
        b"1 (BODY ("
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 23 2)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "alternative")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 336 ' + INNER_ENVELOPE + b" "
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1)'
        b'("application" "pdf" ("name" "a.pdf") "<pdf@x.example>" "A PDF" "base64" 8) '
        b'"mixed") 18)'
        b'("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 20 0) "mixed"))'
    )
    typ, data = client.fetch("2", "(BODYSTRUCTURE)")  # what Dovecot answers for it
    middle = b'((NIL NIL "middle" "example.org"))'
    inner = b'((NIL NIL "inner" "example.org"))'
    assert data[0] == (
        b'2 (BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7bit" 118 (NIL NIL '
        + middle + b" " + middle + b" " + middle + b' NIL NIL NIL NIL NIL) '
        b'("message" "rfc822" NIL NIL NIL "7bit" 60 (NIL "innermost" '
        + inner + b" " + inner + b" " + inner + b' NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1 NIL NIL NIL NIL) 4 '
        b"NIL NIL NIL NIL) 7 NIL NIL NIL NIL))"
    )


INNER_HEADER = crlf(
    "From: inner@example.net\nSubject: Inner\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
    'Content-Type: multipart/mixed; boundary="in"\n\n'
)


def test_sections_of_every_part_and_inside_message_rfc822(client: imaplib.IMAP4):
    got = fetch_items(
        client, 1,
        "(BODY.PEEK[1.1] BODY.PEEK[1.2.MIME] BODY.PEEK[2.MIME] BODY.PEEK[2.HEADER] "
        "BODY.PEEK[2.TEXT]<0.4> BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] "
        "BODY.PEEK[2.HEADER.FIELDS (SUBJECT X-NONE)] BODY.PEEK[2.HEADER.FIELDS.NOT (FROM DATE)] "
        "BODY.PEEK[3]<16.100>)",
    )
    assert got == {
        b"BODY[1.1]": b"Hello world\r\nline two\r\n",
        b"BODY[1.2.MIME]": crlf("Content-Type: text/html\nContent-Location: http://x.example/y\n\n"),
        b"BODY[2.MIME]": crlf(
            'Content-Type: message/rfc822\nContent-Disposition: attachment; filename="fwd.eml"\n'
            "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\n"
        ),
        b"BODY[2.HEADER]": INNER_HEADER,
        b"BODY[2.TEXT]<0>": b"--in",
        b"BODY[2.1]": b"Inner body\r\n",
        b"BODY[2.2.MIME]": crlf(
            'Content-Type: application/pdf; name="a.pdf"\nContent-Transfer-Encoding: base64\n'
            "Content-ID: <pdf@x.example>\nContent-Description: A PDF\n\n"
        ),
        b"BODY[2.HEADER.FIELDS (SUBJECT X-NONE)]": b"Subject: Inner\r\n\r\n",
        b"BODY[2.HEADER.FIELDS.NOT (FROM DATE)]": crlf(
            'Subject: Inner\nContent-Type: multipart/mixed; boundary="in"\n\n'
        ),
        b"BODY[3]<16>": b"r=E9",  # the partial runs out at the part's end
    }
    typ, data = client.fetch("1", "(BODY.PEEK[3]<20.5> BODY.PEEK[9])")
    assert data[0] == b'1 (BODY[3]<20> "" BODY[9] "")'  # past the end; no such part

    got = fetch_items(
        client, 2,
        "(BODY.PEEK[1] BODY.PEEK[1.HEADER] BODY.PEEK[1.TEXT] BODY.PEEK[1.1] "
        "BODY.PEEK[1.1.HEADER] BODY.PEEK[1.1.TEXT] BODY.PEEK[1.1.1])",
    )
    innermost = crlf("From: inner@example.org\nSubject: innermost\n\nHello world\n")
    middle = crlf("From: middle@example.org\nContent-Type: message/rfc822\n\n") + innermost
    assert got == {
        b"BODY[1]": middle,
        b"BODY[1.HEADER]": crlf("From: middle@example.org\nContent-Type: message/rfc822\n\n"),
        b"BODY[1.TEXT]": innermost,
        b"BODY[1.1]": innermost,
        b"BODY[1.1.HEADER]": crlf("From: inner@example.org\nSubject: innermost\n\n"),
        b"BODY[1.1.TEXT]": b"Hello world\r\n",
        b"BODY[1.1.1]": b"Hello world\r\n",
    }


@pytest.mark.parametrize(
    ("criteria", "found"),  # messages 3 to 7 are ADDRESSES; Dovecot finds the same
    [
        ("FROM user-from@domain.example", b"3 4 5 6"),  # comments inside the address too
        ("FROM ser-from@dom", b"3 4 5 6"),
        ("FROM realfrom", b"4 6"),  # a name in a comment is a name
        ('FROM "RealFrom <user-from"', b"4 6"),
        ("TO groupname", b"7"),
        ("TO other", b"7"),
        ("TO groupuser3", b"7"),
        ("TO groupuser4", b""),
        ("CC user-cc@DOMAIN", b"5"),
        ('CC "old style"', b"1"),
        ("BCC realbcc", b"6"),
        ("BCC hidden@y", b"1"),
        ('HEADER CC ""', b"1 5"),
        ('NOT HEADER TO ""', b"2 5 6"),
    ],
)
def test_search_address_fields(client: imaplib.IMAP4, criteria: str, found: bytes):
    assert client.search(None, criteria) == ("OK", [found])


def test_search_charset_utf8_literals_and_unknown_charsets(client: imaplib.IMAP4):
    client.literal = "jörg".encode()
    assert client.search("UTF-8", "CC") == ("OK", [b"1"])
    client.literal = "Grüße".encode()
    assert client.search("UTF-8", "SUBJECT") == ("OK", [b"1"])
    typ, data = client._simple_command("SEARCH", "CHARSET", "KOI8-R", "BODY", "x")
    assert (typ, data) == ("NO", [b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset."])


@pytest.mark.parametrize(
    ("criteria", "found"),
    [
        ("*", b"7"),
        ("*:5", b"5 6 7"),
        ("1,3:4", b"1 3 4"),
        ("UID 3:1", b"1 2 3"),
        ("UID *", b"7"),
        ("OR 1 UID 7", b"1 7"),
        ("NOT 2:6", b"1 7"),
        ("(OR 1 2) (OR 2 3)", b"2"),
        ("SENTON 3-Jan-2024", b"1"),  # the Date: header's own day, whatever its zone
        ("SENTBEFORE 3-Jan-2024", b""),
        ("SENTSINCE 3-Jan-2024", b"1"),
        ("SENTSINCE 4-Jan-2024", b""),
        ("SINCE 1-Jan-2000", b"1 2 3 4 5 6 7"),
        ("BEFORE 1-Jan-2000", b""),
        (f"LARGER {len(TWICE)}", b"1"),  # RFC822.SIZE, strictly larger
        ("SMALLER 100", b"3 4 5 6"),  # sizes 1326 175 68 85 90 88 113
        ('BODY "hello WORLD"', b"1 2"),  # case-insensitive, any text part
        ("BODY caf", b"1"),  # quoted-printable, decoded
        ("BODY innermost", b"2"),  # an embedded message is body, header and all
        ("TEXT innermost", b"2"),
        ("TEXT middle@example", b"2"),
        ('HEADER SUBJECT ""', b"1"),  # the field is there, whatever it holds
        ('HEADER X-Nowhere ""', b""),
        ("SUBJECT NIL", b""),  # NIL here is the word, not nothing
    ],
)
def test_search_keys(client: imaplib.IMAP4, criteria: str, found: bytes):
    assert client.search(None, criteria) == ("OK", [found])
