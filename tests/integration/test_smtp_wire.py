"""What the submission listener reads off the wire, against known attacks and odd input,
over real sockets: SMTP smuggling (a "." after a bare LF or CR never ends DATA),
dot-stuffing, commands pipelined after the end of DATA, over-long lines, header
injection through addresses, and 8-bit and UTF-8 addresses and content.

What the gateway made of a message is read back from the sender's own Sent folder over
IMAP: the copy is stored with the 250, so no relay round trip is waited for.
"""

from __future__ import annotations

import secrets
import smtplib
from collections.abc import Iterator

import pytest

from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import imap_login

pytestmark = pytest.mark.integration


@pytest.fixture
def alice(shared_bubble: Bubble) -> Account:
    return shared_bubble.accounts["alice"]


@pytest.fixture
def bob(shared_bubble: Bubble) -> Account:
    return shared_bubble.accounts["bob"]


@pytest.fixture
def session(alice: Account) -> Iterator[smtplib.SMTP]:
    """An authenticated submission session of alice's, over STARTTLS."""
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        yield smtp


def sent_with(account: Account, token: str) -> list[bytes]:
    """The messages in `account`'s Sent folder that contain `token`."""
    imap = imap_login(account)
    try:
        assert imap.select("Sent", readonly=True)[0] == "OK"
        _, data = imap.uid("SEARCH", "ALL")
        found = []
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            if token.encode() in fetched[0][1]:
                found.append(fetched[0][1])
        return found
    finally:
        imap.logout()


def header_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def command(smtp: smtplib.SMTP, line: str | bytes) -> tuple[int, bytes]:
    """Send one command line as UTF-8 bytes (smtplib's own commands are ASCII only)."""
    smtp.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
    return smtp.getreply()


def begin_data(smtp: smtplib.SMTP, sender: str, recipient: str, *options: str) -> None:
    assert smtp.docmd("MAIL", f"FROM:<{sender}>{''.join(' ' + o for o in options)}")[0] == 250
    assert smtp.docmd("RCPT", f"TO:<{recipient}>")[0] == 250
    assert smtp.docmd("DATA")[0] == 354


@pytest.mark.parametrize(
    "bare", [b"\n.\r\n", b"\n.\n", b"\r.\r\n"], ids=["LF.CRLF", "LF.LF", "CR.CRLF"]
)
def test_a_dot_after_a_bare_line_end_does_not_end_data(
    session: smtplib.SMTP, alice: Account, bob: Account, bare: bytes
) -> None:
    token = "smuggle-" + secrets.token_hex(6)
    begin_data(session, alice.address, bob.address)
    session.send(
        f"From: {alice.address}\r\nTo: {bob.address}\r\nSubject: {token}\r\n\r\nfirst".encode()
        + bare
        + f"MAIL FROM:<{alice.address}>\r\nRCPT TO:<{bob.address}>\r\nDATA\r\n"
          f"From: {alice.address}\r\nSubject: smuggled {token}\r\n\r\nsecond\r\n.\r\n".encode()
    )
    code, reply = session.getreply()
    assert (code, reply[:5]) == (250, b"2.0.0")
    assert session.noop()[0] == 250  # nothing smuggled is waiting for an answer
    (stored,) = sent_with(alice, token)  # one message, the smuggled one inside its body
    assert b"smuggled" not in header_of(stored) and b"Subject: smuggled" in stored


def test_dot_stuffed_lines_arrive_unstuffed(
    session: smtplib.SMTP, alice: Account, bob: Account
) -> None:
    token = "dots-" + secrets.token_hex(6)
    body = f".starts with a dot\r\n..two dots\r\n.\r\n...\r\nend {token}.\r\n"
    message = f"From: {alice.address}\r\nTo: {bob.address}\r\nSubject: dots\r\n\r\n{body}"
    session.sendmail(alice.address, [bob.address], message.encode())  # smtplib stuffs
    (stored,) = sent_with(alice, token)
    assert stored.split(b"\r\n\r\n", 1)[1] == body.encode()


def test_a_command_pipelined_after_the_end_of_data_is_answered(
    session: smtplib.SMTP, alice: Account, bob: Account
) -> None:
    token = "pipelined-" + secrets.token_hex(6)
    begin_data(session, alice.address, bob.address)
    session.send(
        f"From: {alice.address}\r\nSubject: {token}\r\n\r\nbody\r\n.\r\nNOOP\r\n"
        f"MAIL FROM:<{alice.address}>\r\n".encode()
    )
    assert session.getreply()[0] == 250  # the message
    assert session.getreply() == (250, b"OK")  # NOOP
    assert session.getreply()[0] == 250  # MAIL
    assert session.rset()[0] == 250
    assert len(sent_with(alice, token)) == 1


def test_a_line_over_1000_octets_is_refused_and_the_session_goes_on(
    session: smtplib.SMTP, alice: Account, bob: Account
) -> None:
    begin_data(session, alice.address, bob.address)
    session.send(b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\nafter\r\n.\r\n")
    code, reply = session.getreply()
    assert code == 500 and b"Line too long" in reply
    assert session.noop()[0] == 250


@pytest.mark.parametrize("address", [
    "bob@{domain}\rX-Injected: yes", "bob@{domain}\x00X-Injected: yes",
    "bob@{domain}>\nX-Injected: yes",
], ids=["CR", "NUL", "LF"])
def test_control_characters_in_an_address_are_refused(
    session: smtplib.SMTP, alice: Account, bob: Account, address: str
) -> None:
    domain = bob.address.split("@")[1]
    assert session.docmd("MAIL", f"FROM:<{alice.address}>")[0] == 250
    session.send(f"RCPT TO:<{address.format(domain=domain)}>\r\n".encode())
    replies = [session.getreply()]
    if address.startswith("bob@{domain}>\n"):  # aiosmtpd ends a command at LF: two replies
        replies.append(session.getreply())
    assert replies[-1][0] >= 500
    if len(replies) == 2:
        assert replies[0][0] == 250  # the well-formed "RCPT TO:<bob@...>" part
    else:
        assert session.docmd("DATA")[0] == 503  # no recipient was taken


def test_a_header_cannot_be_injected_through_an_encoded_display_name(
    session: smtplib.SMTP, alice: Account, bob: Account
) -> None:
    token = "inject-" + secrets.token_hex(6)
    injected_from = (
        f"From: =?utf-8?q?Alice=0D=0AX-Injected=3A_yes?= <{alice.address}>\r\n"
        f"Subject: {token}\r\n\r\nbody\r\n"
    ).encode()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        session.sendmail(alice.address, [bob.address], injected_from)
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
    injected_to = (
        f"From: {alice.address}\r\nTo: =?utf-8?q?Bob=0D=0AX-Injected=3A_yes?= <{bob.address}>"
        f"\r\nSubject: {token}\r\n\r\nbody\r\n"
    ).encode()
    session.sendmail(alice.address, [bob.address], injected_to)
    (stored,) = sent_with(alice, token)
    assert not any(line.lower().startswith(b"x-injected") for line in stored.split(b"\r\n"))


def test_utf8_addresses_and_8bit_content(
    session: smtplib.SMTP, alice: Account, bob: Account
) -> None:
    token = "utf8-" + secrets.token_hex(6)
    domain = bob.address.split("@")[1]
    # An address the bubble does not know, written in UTF-8: refused as unknown, cleanly.
    assert session.docmd("MAIL", f"FROM:<{alice.address}> SMTPUTF8 BODY=8BITMIME")[0] == 250
    code, _ = command(session, f"RCPT TO:<jürgen@{domain}>")
    assert code == 550
    assert session.rset()[0] == 250
    # The same without SMTPUTF8 is the client's error (RFC 6531 section 3.7.4).
    assert session.docmd("MAIL", f"FROM:<{alice.address}>")[0] == 250
    code, reply = command(session, f"RCPT TO:<jürgen@{domain}>")
    assert (code, reply[:5]) == (553, b"5.6.7")
    assert session.rset()[0] == 250
    # 8-bit bytes that are not UTF-8 in a command: refused, the session goes on.
    assert command(session, b"MAIL FROM:<al\xe9@" + domain.encode() + b">")[0] >= 500
    assert session.rset()[0] == 250
    # UTF-8 in the header and 8-bit body text arrive byte for byte.
    body = f"Grüße, {token} — ½ €\r\n".encode()
    begin_data(session, alice.address, bob.address, "SMTPUTF8", "BODY=8BITMIME")
    session.send(
        f"From: Älice <{alice.address}>\r\nTo: {bob.address}\r\nSubject: Grüße {token}\r\n"
        "\r\n".encode() + body + b".\r\n"
    )
    assert session.getreply()[0] == 250
    (stored,) = sent_with(alice, token)
    assert f"Subject: Grüße {token}".encode() in header_of(stored)
    assert stored.split(b"\r\n\r\n", 1)[1] == body


def test_chunking_is_not_offered_and_bdat_is_not_a_command(session: smtplib.SMTP) -> None:
    """docs/submission-policy.md says why; a client that follows RFC 3030 uses DATA."""
    session.ehlo()
    assert not session.has_extn("chunking") and session.has_extn("pipelining")
    code, reply = session.docmd("BDAT", "0 LAST")
    assert code == 500 and b"not recognized" in reply
    assert session.noop()[0] == 250
