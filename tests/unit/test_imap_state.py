"""ImapState on every storage backend: command bytes in, response bytes out.

Each test that reaches storage runs on the in-memory store, the SQL store on SQLite and
the SQL store on PostgreSQL (tests/imap_backends.py); tests that never reach storage
run once, on the memory store.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings, read_toml
from gateway.config import GatewayConfig
from gateway.imap import protocol as wire
from gateway.imap.backend import AuthenticationFailed, FlagMode
from gateway.imap.config import ImapConfig
from gateway.imap.session import (
    ImapState,
    LoginFailure,
    LoginRequest,
    Reply,
    StartTlsRequest,
    State,
)
from tests.imap_backends import BACKEND_PARAMS, MailBackend, make_backend, memory_only

USER = "alice@example.org"
PASSWORD = "correct horse"

PLAIN = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Tue, 2 Jan 2024 12:00:00 +0100\r\n"
    b"Message-ID: <lunch@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)


def mixed(subject: str = "Report", text: bytes = b"See the attachment.") -> bytes:
    return (
        b"From: Carol <carol@example.org>\r\n"
        b"To: alice@example.org\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Wed, 3 Jan 2024 09:30:00 +0000\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n" + text + b"\r\n"
        b"--b1\r\n"
        b'Content-Type: application/pdf; name="r.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=r.pdf\r\n"
        b"\r\n"
        b"JVBERi0xLjQK\r\n"
        b"--b1--\r\n"
    )


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    """Each backend in turn, holding USER's account with its standard folders and no mail."""
    mail_backend.add_account(USER, PASSWORD)
    return mail_backend


class Harness:
    """One connection's state over a backend, fed command lines; answers as bytes."""

    def __init__(
        self,
        backend: MailBackend,
        *,
        config: ImapConfig | None = None,
        tls: bool = True,
        loopback: bool = False,
    ) -> None:
        self.backend = backend
        self.auth = backend.authenticator
        self.state = ImapState(
            config or ImapConfig(), tls_available=True, tls_active=tls, loopback=loopback
        )

    def deliver(
        self,
        body: bytes = PLAIN,
        flags: tuple[str, ...] = (),
        internal_date: datetime | None = None,
    ) -> int:
        return self.backend.deliver(USER, "INBOX", body, flags, internal_date)

    def flags(self, uid: int) -> frozenset[str]:
        """What storage holds now for this INBOX message."""
        return self.backend.flags(USER, "INBOX", uid)

    def uids(self) -> list[int]:
        return self.backend.uids(USER, "INBOX")

    def uid_validity(self) -> int:
        return self.backend.snapshot(USER, "INBOX").uid_validity

    def carry_out(self, reply: Reply) -> bytes:
        out = b"".join(wire.serialize(r) for r in reply.responses)
        if isinstance(reply.action, LoginRequest):
            try:
                result: object = self.auth.login(reply.action.username, reply.action.password)
            except AuthenticationFailed:
                result = LoginFailure.BAD_CREDENTIALS
            out += self.carry_out(self.state.finish_login(reply.action, result))  # type: ignore[arg-type]
        return out

    def __call__(self, line: bytes) -> bytes:
        try:
            command = wire.parse_command(line + b"\r\n")
        except wire.RemoteProtocolError as error:
            return self.carry_out(self.state.reject(error))
        return self.carry_out(self.state.handle(command))

    def login(self) -> None:
        assert b"a OK" in self(f'a LOGIN {USER} "{PASSWORD}"'.encode())

    def select(self, mailbox: str = "INBOX") -> bytes:
        self.login()
        return self(b"s SELECT " + mailbox.encode())


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1]


# -- capabilities, STARTTLS, login


@memory_only
def test_capabilities_before_tls_disable_login(backend: MailBackend):
    h = Harness(backend, tls=False)
    caps = h(b"c CAPABILITY")
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps
    assert b"IMAP4rev1" in caps and b"LITERAL+" in caps and b"SASL-IR" in caps
    assert h(b"l LOGIN alice@example.org pw") == (
        b"l NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS first.\r\n"
    )
    ir = base64.b64encode(b"\0alice@example.org\0pw").decode()
    assert h(f"p AUTHENTICATE PLAIN {ir}".encode()).startswith(b"p NO [PRIVACYREQUIRED]")


@memory_only
def test_starttls_asks_the_server_then_capabilities_change(backend: MailBackend):
    h = Harness(backend, tls=False)
    reply = h.state.handle(wire.parse_command(b"t STARTTLS\r\n"))
    assert isinstance(reply.action, StartTlsRequest)
    assert [wire.serialize(r) for r in reply.responses] == [b"t OK Begin TLS negotiation now.\r\n"]
    h.state.tls_started()
    caps = h(b"c CAPABILITY")
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    assert h(b"t2 STARTTLS") == b"t2 BAD TLS is already active.\r\n"


def test_login_without_tls_from_loopback(backend: MailBackend):
    h = Harness(backend, tls=False, loopback=True)
    caps = h(b"c CAPABILITY")
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps and b"STARTTLS" in caps
    h.login()
    assert h.state.state is State.AUTHENTICATED


@memory_only
def test_loopback_plaintext_login_can_be_forbidden(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(loopback_plaintext_login=False), tls=False,
                loopback=True)
    assert b"LOGINDISABLED" in h(b"c CAPABILITY")
    assert h(b"l LOGIN alice@example.org pw").startswith(b"l NO [PRIVACYREQUIRED]")


def test_login_ok_reports_capabilities_and_hides_auth(backend: MailBackend):
    h = Harness(backend)
    out = h(f'a LOGIN {USER} "{PASSWORD}"'.encode())
    assert out.startswith(b"a OK [CAPABILITY IMAP4rev1 ") and out.endswith(b"] Logged in.\r\n")
    assert b"AUTH=PLAIN" not in out
    assert h(b"b LOGIN x y") == b"b BAD Already logged in.\r\n"


def test_wrong_password_and_unknown_user_look_alike(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(max_login_failures=4))
    expected = b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert h(f"a LOGIN {USER} wrong".encode()) == expected
    assert h(b"a LOGIN nobody@example.org wrong") == expected
    assert h(b"a LOGIN not-an-address wrong") == expected


def test_login_name_is_the_normalized_address(backend: MailBackend):
    h = Harness(backend)
    assert h(f'a LOGIN " Alice@Example.ORG " "{PASSWORD}"'.encode()).startswith(b"a OK ")
    assert [s.address for s in backend.sessions] == [USER]


def test_too_many_login_failures_say_bye(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(max_login_failures=2))
    h(b"a LOGIN x y")
    out = h(b"b LOGIN x y")
    assert lines(out) == [
        b"b NO [AUTHENTICATIONFAILED] Authentication failed.",
        b"* BYE Too many failed logins.",
    ]
    assert h.state.state is State.LOGOUT


@memory_only
def test_login_unavailable_is_not_a_credential_failure(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(max_login_failures=1))
    request = LoginRequest("a", "u", "p")
    out = h.carry_out(h.state.finish_login(request, LoginFailure.UNAVAILABLE))
    assert out == b"a NO [UNAVAILABLE] Login is unavailable; try again later.\r\n"
    assert h.state.state is State.NOT_AUTHENTICATED


def test_authenticate_plain_with_initial_response(backend: MailBackend):
    h = Harness(backend)
    ir = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert h(f"a AUTHENTICATE PLAIN {ir}".encode()).startswith(b"a OK [CAPABILITY")
    assert h.state.state is State.AUTHENTICATED


def test_authenticate_plain_continuation_form(backend: MailBackend):
    h = Harness(backend)
    assert h(b"a AUTHENTICATE plain") == b"+ \r\n"
    response = base64.b64encode(f"{USER}\0{USER}\0{PASSWORD}".encode())
    assert h.carry_out(h.state.handle_continuation(response)).startswith(b"a OK ")


@memory_only
def test_authenticate_cancel_and_garbage(backend: MailBackend):
    h = Harness(backend)
    h(b"a AUTHENTICATE PLAIN")
    assert h.carry_out(h.state.handle_continuation(b"*")) == b"a BAD Authentication cancelled.\r\n"
    h(b"b AUTHENTICATE PLAIN")
    out = h.carry_out(h.state.handle_continuation(b"!!!"))
    assert out == b"b BAD Invalid base64 in the authentication response.\r\n"
    h(b"c AUTHENTICATE PLAIN")
    out = h.carry_out(h.state.handle_continuation(base64.b64encode(b"no-nuls")))
    assert out == b"c BAD Malformed PLAIN response.\r\n"
    other = base64.b64encode(f"bob@example.org\0{USER}\0{PASSWORD}".encode()).decode()
    assert h(f"d AUTHENTICATE PLAIN {other}".encode()).startswith(b"d NO [AUTHORIZATIONFAILED]")
    assert h(b"e AUTHENTICATE CRAM-MD5").startswith(b"e NO [CANNOT]")
    assert h.state.state is State.NOT_AUTHENTICATED


# -- the state table and bad commands


def test_commands_in_the_wrong_state_are_bad(backend: MailBackend):
    h = Harness(backend)
    assert h(b"a SELECT INBOX") == b"a BAD Log in first.\r\n"
    h.login()
    assert h(b"b FETCH 1 FLAGS") == b"b BAD No mailbox selected.\r\n"
    h(b"s SELECT INBOX")
    assert h(b"c ENABLE CONDSTORE") == b"c BAD Command not allowed in the selected state.\r\n"


@memory_only
def test_bad_command_limit_says_bye(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(bad_command_limit=3))
    h(b"a FOO")
    assert h(b"b NOOP") == b"b OK NOOP completed.\r\n"  # a good command resets the count
    h(b"c FOO")
    h(b"d BAR")
    assert lines(h(b"e BAZ")) == [b"e BAD Unknown command BAZ", b"* BYE Too many invalid commands."]
    assert h.state.state is State.LOGOUT


@memory_only
def test_fatal_protocol_error_says_bye(backend: MailBackend):
    h = Harness(backend)
    error = wire.RemoteProtocolError(
        wire.Tagged("a", wire.Status.BAD, "Command line too long", wire.Code("TOOBIG")), fatal=True
    )
    out = h.carry_out(h.state.reject(error))
    assert lines(out) == [b"a BAD [TOOBIG] Command line too long", b"* BYE Protocol error."]


def test_logout_closes_the_session(backend: MailBackend):
    h = Harness(backend)
    h.login()
    assert lines(h(b"z LOGOUT")) == [b"* BYE Logging out.", b"z OK LOGOUT completed."]
    assert h.state.state is State.LOGOUT
    assert [s.closed for s in backend.sessions] == [True]


def test_id_enable_namespace(backend: MailBackend):
    h = Harness(backend)
    assert lines(h(b'i ID ("name" "imaplib")')) == [
        b'* ID ("name" "Sealgate")',
        b"i OK ID completed.",
    ]
    h.login()
    assert lines(h(b"e ENABLE CONDSTORE")) == [
        b"* ENABLED CONDSTORE",
        b"e OK ENABLE completed.",
    ]
    assert lines(h(b"f ENABLE X-UNKNOWN CONDSTORE QRESYNC QRESYNC")) == [
        b"* ENABLED QRESYNC",
        b"f OK ENABLE completed.",
    ]
    assert h(b"n NAMESPACE").startswith(b'* NAMESPACE (("" "/")) NIL NIL\r\n')


# -- LIST, STATUS, SELECT


def test_list_patterns(backend: MailBackend):
    h = Harness(backend)
    extra = ["Archive/2023", "Archive/2024/Q1", "Sent/2023", "Ünïcode"]
    backend.add_account("b@x.org", "pw", extra)
    h(b"a LOGIN b@x.org pw")
    everything = h(b'l LIST "" "*"')
    assert lines(everything) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\Archive \\HasChildren) "/" "Archive"',
        b'* LIST (\\HasNoChildren) "/" "Archive/2023"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Archive/2024"',
        b'* LIST (\\HasNoChildren) "/" "Archive/2024/Q1"',
        b'* LIST (\\Drafts \\HasNoChildren) "/" "Drafts"',
        b'* LIST (\\Junk \\HasNoChildren) "/" "Junk"',
        b'* LIST (\\Sent \\HasChildren) "/" "Sent"',
        b'* LIST (\\HasNoChildren) "/" "Sent/2023"',
        b'* LIST (\\Trash \\HasNoChildren) "/" "Trash"',
        b'* LIST (\\HasNoChildren) "/" "&ANw-n&AO8-code"',
        b"l OK LIST completed.",
    ]
    top = lines(h(b'l LIST "" "%"'))
    assert [x.rsplit(b" ", 1)[1] for x in top[:-1]] == [
        b'"INBOX"',
        b'"Archive"',
        b'"Drafts"',
        b'"Junk"',
        b'"Sent"',
        b'"Trash"',
        b'"&ANw-n&AO8-code"',
    ]
    assert lines(h(b'l LIST "Archive/" "%"'))[:-1] == [
        b'* LIST (\\HasNoChildren) "/" "Archive/2023"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Archive/2024"',
    ]
    assert lines(h(b'l LIST "" inbox')) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b"l OK LIST completed.",
    ]
    assert lines(h(b'l LIST "" ""')) == [b'* LIST (\\Noselect) "/" ""', b"l OK LIST completed."]
    # Every folder there is was subscribed; a missing parent is not, so LSUB "*" skips it
    # and LSUB "%" shows a parent of subscribed names as \Noselect.
    assert lines(h(b'l LSUB "" "*"').replace(b"LSUB", b"LIST")) == [
        line for line in lines(everything) if b'"Archive/2024"' not in line
    ]
    h(b"s SUBSCRIBE Gone/Child")
    assert lines(h(b'l LSUB "" "G%"')) == [
        b'* LSUB (\\Noselect) "/" "Gone"',
        b"l OK LSUB completed.",
    ]


def test_list_shows_special_use(backend: MailBackend):
    h = Harness(backend)
    h.login()
    assert b'* LIST (\\Sent \\HasNoChildren) "/" "Sent"' in h(b'l LIST "" "*"')


def test_status(backend: MailBackend):
    h = Harness(backend)
    h.deliver(flags=("\\Seen",))
    h.deliver()
    h.login()
    out = h(b"s STATUS inbox (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT HIGHESTMODSEQ)")
    validity = h.uid_validity()
    assert lines(out) == [
        f'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3 UIDVALIDITY {validity} RECENT 2 '
        f"HIGHESTMODSEQ 3)".encode(),
        b"s OK STATUS completed.",
    ]
    assert h(b"s STATUS INBOX (BOGUS)") == b"s BAD Unknown status item BOGUS.\r\n"
    assert h(b"s STATUS Nope (MESSAGES)") == b"s NO [NONEXISTENT] No such mailbox.\r\n"


def test_select_and_examine(backend: MailBackend):
    h = Harness(backend)
    h.deliver(flags=("\\Seen", "$Important"))
    h.deliver()
    out = h.select()
    validity = h.uid_validity()
    assert lines(out) == [
        b"* FLAGS ($Important \\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* OK [PERMANENTFLAGS ($Important \\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)]"
        b" Flags permitted.",
        b"* 2 EXISTS",
        b"* 2 RECENT",  # never selected before: both are new to this session
        b"* OK [UNSEEN 2] First unseen.",
        f"* OK [UIDVALIDITY {validity}] UIDs valid.".encode(),
        b"* OK [UIDNEXT 3] Predicted next UID.",
        b"* OK [HIGHESTMODSEQ 3] Highest modseq.",
        b"s OK [READ-WRITE] SELECT completed.",
    ]
    out = lines(h(b"e EXAMINE INBOX"))
    assert out[0] == b"* OK [CLOSED] Previous mailbox closed."
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted." in out
    assert out[-1] == b"e OK [READ-ONLY] EXAMINE completed."


def test_select_missing_mailbox_leaves_selected_state(backend: MailBackend):
    h = Harness(backend)
    h.select()
    assert h(b"s SELECT Nope") == b"s NO [NONEXISTENT] No such mailbox.\r\n"
    assert h.state.state is State.AUTHENTICATED


def test_create_delete_rename_and_subscriptions(backend: MailBackend):
    h = Harness(backend)
    h.login()
    assert h(b"c CREATE INBOX").startswith(b"c NO [ALREADYEXISTS]")
    assert h(b"c CREATE Work/Projects/") == b"c OK CREATE completed.\r\n"
    assert h(b"c CREATE Work/Projects").startswith(b"c NO [ALREADYEXISTS]")
    assert lines(h(b'l LIST "" "Work*"')) == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Work"',
        b'* LIST (\\HasNoChildren) "/" "Work/Projects"',
        b"l OK LIST completed.",
    ]
    assert h(b"d DELETE Work").startswith(b"d NO [HASCHILDREN]")
    assert h(b"d DELETE INBOX").startswith(b"d NO [CANNOT]")
    assert h(b"d DELETE Nope").startswith(b"d NO [NONEXISTENT]")
    assert h(b"r RENAME Work/Projects Done") == b"r OK RENAME completed.\r\n"
    assert h(b"r RENAME Done Sent").startswith(b"r NO [ALREADYEXISTS]")
    assert h(b"r RENAME Nope Other").startswith(b"r NO [NONEXISTENT]")
    assert h(b"s SUBSCRIBE Nope") == b"s OK SUBSCRIBE completed.\r\n"
    assert b'* LSUB (\\Noselect) "/" "Nope"' in h(b'l LSUB "" "*"')
    assert h(b"u UNSUBSCRIBE Nope") == b"u OK UNSUBSCRIBE completed.\r\n"
    assert h(b"u UNSUBSCRIBE Nope").startswith(b"u NO [CANNOT]")
    assert h(b"d DELETE Done") == b"d OK DELETE completed.\r\n"
    assert b"Done" not in h(b'l LIST "" "*"')
    assert h(b"c CREATE") == b"c BAD Incomplete CREATE command: arguments are missing\r\n"


def test_deleting_or_renaming_the_selected_folder_leaves_it(backend: MailBackend):
    h = Harness(backend)
    h.login()
    h(b"c CREATE Box")
    assert b"s OK" in h(b"s SELECT Box")
    assert h(b"r RENAME Box Box2") == b"r OK RENAME completed.\r\n"
    assert h.state.state is State.AUTHENTICATED
    assert h(b"f FETCH 1 FLAGS") == b"f BAD No mailbox selected.\r\n"
    assert b"s OK" in h(b"s SELECT Box2")
    assert h(b"d DELETE Box2") == b"d OK DELETE completed.\r\n"
    assert h.state.state is State.AUTHENTICATED


def test_append_answers_appenduid_and_announces_exists(backend: MailBackend):
    h = Harness(backend)
    h.select()
    validity = h.uid_validity()
    message = b"Subject: draft\r\n\r\nhello\r\n"
    literal = b"{%d+}\r\n" % len(message) + message
    out = lines(h(b'a APPEND INBOX (\\Draft $Todo) "2-Jan-2024 10:00:00 +0000" ' + literal))
    assert out[-1] == b"a OK [APPENDUID %d 1] APPEND completed." % validity
    assert b"* 1 EXISTS" in out
    assert h.flags(1) == {"\\Draft", "$Todo"}
    assert h(b"f UID FETCH 1 (INTERNALDATE BODY.PEEK[])") == (
        b'* 1 FETCH (UID 1 INTERNALDATE "02-Jan-2024 10:00:00 +0000" BODY[] {%d}\r\n' % len(message)
        + message
        + b")\r\nf OK FETCH completed.\r\n"
    )
    assert h(b"a APPEND Nope " + literal).startswith(b"a NO [TRYCREATE]")
    assert h(b"a APPEND INBOX {0+}\r\n").startswith(b"a NO [CANNOT]")


def test_copy_and_move_answer_copyuid_and_expunge(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver()
    h.select()
    trash = backend.snapshot(USER, "Trash").uid_validity
    assert lines(h(b"c COPY 1:2 Trash")) == [b"c OK [COPYUID %d 1:2 1:2] COPY completed." % trash]
    assert lines(h(b"c UID COPY 3 INBOX"))[-3:] == [
        b"* 4 EXISTS",
        b"* 4 RECENT",
        b"c OK [COPYUID %d 3 4] COPY completed." % h.uid_validity(),
    ]
    assert h(b"c COPY 1 Nope").startswith(b"c NO [TRYCREATE]")
    assert h(b"c COPY 9 Trash") == b"c BAD No such message sequence number\r\n"
    assert h(b"c UID COPY 99 Trash") == b"c OK COPY completed.\r\n"
    assert lines(h(b"m MOVE 2:3 Trash")) == [
        b"* OK [COPYUID %d 2:3 3:4] Moved." % trash,
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"m OK MOVE completed.",
    ]
    assert h.uids() == [1, 4]
    assert lines(h(b"m UID MOVE 4 Trash")) == [
        b"* OK [COPYUID %d 4 5] Moved." % trash,
        b"* 2 EXPUNGE",
        b"m OK MOVE completed.",
    ]
    assert h(b"m MOVE 1 INBOX").startswith(b"m NO [CANNOT]")
    assert h.uids() == [1]
    assert b"e OK" in h(b"e EXAMINE INBOX")
    assert h(b"m MOVE 1 Trash").startswith(b"m NO [READ-ONLY]")
    assert b"c OK [COPYUID" in h(b"c COPY 1 Trash")


def test_uid_expunge_removes_only_the_named(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver(flags=("\\Deleted",))
    h.select()
    assert lines(h(b"e UID EXPUNGE 2:3")) == [
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"e OK EXPUNGE completed.",
    ]
    assert h.uids() == [1]


def test_write_commands_need_their_state(backend: MailBackend):
    h = Harness(backend)
    assert h(b"a APPEND INBOX {1+}\r\nx") == b"a BAD Log in first.\r\n"
    h.login()
    assert h(b"c COPY 1 Trash") == b"c BAD No mailbox selected.\r\n"
    assert h(b"m UID MOVE 1 Trash") == b"m BAD No mailbox selected.\r\n"
    assert h(b"e UID EXPUNGE 1") == b"e BAD No mailbox selected.\r\n"


# -- FETCH


def test_fetch_simple_items(backend: MailBackend):
    h = Harness(backend)
    when = datetime(2024, 1, 2, 11, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    h.deliver(flags=("\\Flagged",), internal_date=when)
    h.select()
    out = h(b"f FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)")
    date = b"11:00:05 +0200"  # in the zone it was given
    assert lines(out) == [
        b'* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) INTERNALDATE "02-Jan-2024 %s" RFC822.SIZE %d)'
        % (date, len(PLAIN)),
        b"f OK FETCH completed.",
    ]
    assert h.backend.fetch_calls == []  # metadata only: nothing was decrypted


def test_fetch_macros(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    fast = h(b"f FETCH 1 FAST")
    flags = rb"\* 1 FETCH \(FLAGS \(\\Recent\) "
    assert re.match(flags + rb"INTERNALDATE \"[^\"]+\" RFC822.SIZE \d+\)", fast)
    assert b"ENVELOPE (" in h(b"f FETCH 1 ALL")
    full = h(b"f FETCH 1 FULL")
    assert b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 24 1))' in full


def test_fetch_envelope(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    out = h(b"f FETCH 1 ENVELOPE")
    assert lines(out)[0] == (
        b'* 1 FETCH (ENVELOPE ("Tue, 2 Jan 2024 12:00:00 +0100" "Lunch" '
        b'(("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) '
        b'(("Bob" NIL "bob" "example.org")) (("Alice" NIL "alice" "example.org")) '
        b'NIL NIL NIL "<lunch@example.org>"))'
    )


def test_fetch_body_sets_seen_and_reports_flags(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    out = h(b"f FETCH 1 BODY[]")
    assert out == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(PLAIN) + PLAIN + b" FLAGS (\\Recent \\Seen))\r\n"
        b"f OK FETCH completed.\r\n"
    )
    assert h.flags(1) == {"\\Seen"}
    # already seen: no FLAGS this time
    assert b"FLAGS" not in h(b"f FETCH 1 RFC822")


def test_peek_and_examine_do_not_set_seen(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    h(b"f FETCH 1 (BODY.PEEK[] RFC822.HEADER)")
    h(b"e EXAMINE INBOX")
    out = h(b"f FETCH 1 (BODY[TEXT] RFC822.TEXT)")
    assert b"FLAGS" not in out
    assert h.flags(1) == frozenset()


def test_fetch_sections_and_partials(backend: MailBackend):
    h = Harness(backend)
    h.deliver(mixed())
    h.select()

    def one(item: bytes) -> bytes:
        out = h(b"f UID FETCH 1 (" + item + b")")
        assert out.endswith(b"f OK FETCH completed.\r\n"), out
        return out[: -len(b"f OK FETCH completed.\r\n")]

    assert one(b"BODY.PEEK[1]") == b"* 1 FETCH (UID 1 BODY[1] {19}\r\nSee the attachment.)\r\n"
    assert one(b"BODY.PEEK[2.MIME]").startswith(b"* 1 FETCH (UID 1 BODY[2.MIME] {")
    assert one(b"BODY.PEEK[2]<0.4>") == b"* 1 FETCH (UID 1 BODY[2]<0> {4}\r\nJVBE)\r\n"
    assert one(b"BODY.PEEK[2]<4.100>") == b"* 1 FETCH (UID 1 BODY[2]<4> {8}\r\nRi0xLjQK)\r\n"
    assert one(b"BODY.PEEK[2]<400.1>") == b'* 1 FETCH (UID 1 BODY[2]<400> "")\r\n'
    assert one(b"BODY.PEEK[3]") == b'* 1 FETCH (UID 1 BODY[3] "")\r\n'
    fields = b"From: Carol <carol@example.org>\r\nSubject: Report\r\n\r\n"
    assert one(b"BODY.PEEK[HEADER.FIELDS (subject FROM)]") == (
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (subject FROM)] {%d}\r\n%s)\r\n"
        % (len(fields), fields)
    )
    not_fields = one(b"BODY.PEEK[HEADER.FIELDS.NOT (Subject From Date To Content-Type)]")
    assert not_fields == (
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS.NOT (Subject From Date To Content-Type)] {21}\r\n"
        b"MIME-Version: 1.0\r\n\r\n)\r\n"
    )
    header = one(b"BODY.PEEK[HEADER]")
    assert header.endswith(b'boundary="b1"\r\n\r\n)\r\n')
    assert one(b"RFC822.HEADER") == header.replace(b"BODY[HEADER]", b"RFC822.HEADER")


def test_fetch_bodystructure(backend: MailBackend):
    h = Harness(backend)
    h.deliver(mixed())
    h.select()
    out = lines(h(b"f FETCH 1 BODYSTRUCTURE"))[0]
    assert out == (
        b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 19 0 '
        b'NIL NIL NIL NIL)("application" "pdf" ("name" "r.pdf") NIL NIL "base64" 12 NIL '
        b'("attachment" ("filename" "r.pdf")) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL))'
    )


def test_uid_fetch_always_returns_uid_and_skips_missing(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver()
    h.select()
    out = lines(h(b"f UID FETCH 2:10 FLAGS"))
    assert out == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))",
        b"f OK FETCH completed.",
    ]
    assert lines(h(b"f UID FETCH 7:* UID")) == [b"* 3 FETCH (UID 3)", b"f OK FETCH completed."]


def test_fetch_bad_sequence_numbers(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    assert h(b"f FETCH 2 FLAGS") == b"f BAD No such message sequence number\r\n"
    h(b"s SELECT Drafts")  # empty
    assert h(b"f FETCH 1:* FLAGS") == b"f BAD No such message sequence number\r\n"
    assert h(b"f UID FETCH 1:* FLAGS") == b"f OK FETCH completed.\r\n"


def test_fetch_decrypts_in_batches(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(fetch_batch=2))
    for _ in range(5):
        h.deliver()
    h.select()
    out = h(b"f FETCH 1:* BODY.PEEK[]")
    assert out.count(b" FETCH (BODY[] {") == 5
    assert h.backend.fetch_calls == [2, 2, 1]


def test_fetch_batches_are_bounded_by_decrypted_octets(backend: MailBackend):
    size = len(PLAIN)
    h = Harness(backend, config=ImapConfig(fetch_batch_octets=2 * size))
    big = PLAIN + b"x" * (3 * size) + b"\r\n"  # more than a batch may hold: it goes alone
    bodies = [PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, big, PLAIN]
    for body in bodies:
        h.deliver(body)
    h.select()
    out = h(b"f FETCH 1:* (UID BODY.PEEK[])")
    assert out == b"".join(
        b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (n, n, len(body), body)
        for n, body in enumerate(bodies, 1)
    ) + b"f OK FETCH completed.\r\n"
    assert h.backend.fetch_calls == [2, 2, 1, 1, 1]
    h.backend.fetch_calls.clear()
    searched = h(b"s SEARCH BODY xxx")  # SEARCH reads whole messages in the same batches
    assert searched == b"* SEARCH 6\r\ns OK SEARCH completed.\r\n"
    assert h.backend.fetch_calls == [2, 2, 1, 1, 1]


def test_a_fetch_budget_below_one_message_still_serves_every_message(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(fetch_batch_octets=1))
    for _ in range(3):
        h.deliver()
    h.select()
    out = h(b"f FETCH 1:* (BODY.PEEK[TEXT])")
    assert out.count(b"BODY[TEXT] {24}\r\nShall we meet at noon?\r\n)") == 3
    assert out.endswith(b"f OK FETCH completed.\r\n")
    assert h.backend.fetch_calls == [1, 1, 1]


# -- SEARCH


def search_harness(backend: MailBackend, *, seed: bool = True) -> Harness:
    h = Harness(backend)
    if seed:
        day = datetime(2024, 3, 10, 23, 30, tzinfo=UTC)
        h.deliver(PLAIN, ("\\Seen",), internal_date=day)  # 1
        h.deliver(mixed("Quarterly report"), ("\\Flagged",), internal_date=day + timedelta(days=1))
        h.deliver(
            mixed("Notes", b"caf\xc3\xa9 au lait"),
            ("\\Deleted", "$Work"),
            internal_date=day + timedelta(days=2),
        )  # 3
    h.select()
    return h


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def search_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailBackend]:
    """Each backend once for the module, seeded by `search_harness`, for tests that only read."""
    with make_backend(request.param, tmp_path_factory.mktemp("search")) as backend:
        backend.add_account(USER, PASSWORD)
        search_harness(backend)
        yield backend


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"ALL", b"1 2 3"),
        (b"UNSEEN", b"2 3"),
        (b"SEEN", b"1"),
        (b"DELETED", b"3"),
        (b"UNDELETED", b"1 2"),
        (b"FLAGGED", b"2"),
        (b"KEYWORD $work", b"3"),
        (b"UNKEYWORD $Work", b"1 2"),
        (b"NOT SEEN", b"2 3"),
        (b"UNSEEN UNDELETED", b"2"),
        (b"OR SEEN FLAGGED", b"1 2"),
        (b"(OR SEEN DELETED) NOT 3", b"1"),
        (b"2:*", b"2 3"),
        (b"UID 1,3", b"1 3"),
        (b"NEW", b""),
        (b"OLD", b"1 2 3"),
        (b"RECENT", b""),
        (b"LARGER 399", b"2 3"),
        (b"SMALLER 400", b"1"),
        (b"SMALLER 401", b"1 3"),
        (b"LARGER 400", b"2"),
        (b"ON 11-Mar-2024", b"2"),
        (b"BEFORE 11-Mar-2024", b"1"),
        (b'SINCE "11-Mar-2024"', b"2 3"),
        (b"SENTON 2-Jan-2024", b"1"),
        (b"SENTSINCE 3-Jan-2024", b"2 3"),
        (b"SUBJECT report", b"2"),
        (b"FROM carol", b"2 3"),
        (b"TO alice", b"1 2 3"),
        (b"HEADER Message-ID lunch", b"1"),
        (b'HEADER Message-ID ""', b"1"),
        (b"BODY noon", b"1"),
        (b"BODY Lunch", b""),
        (b"TEXT Lunch", b"1"),
        (b"CHARSET UTF-8 BODY {5}\r\ncaf\xc3\xa9", b"3"),
    ],
)
def test_search(search_backend: MailBackend, criteria: bytes, expected: bytes):
    h = search_harness(search_backend, seed=False)
    out = h(b"s SEARCH " + criteria)
    assert lines(out) == [
        b"* SEARCH" + (b" " + expected if expected else b""),
        b"s OK SEARCH completed.",
    ]


def test_uid_search_answers_uids(backend: MailBackend):
    h = search_harness(backend)
    h(b"s STORE 1 +FLAGS (\\Deleted)")
    h(b"x EXPUNGE")
    assert lines(h(b"s UID SEARCH UNSEEN"))[0] == b"* SEARCH 2"
    assert lines(h(b"s SEARCH UNSEEN"))[0] == b"* SEARCH 1"


def test_search_charset_and_metadata_only(backend: MailBackend):
    h = search_harness(backend)
    assert h(b"s SEARCH CHARSET KOI8-R ALL") == (
        b"s NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset.\r\n"
    )
    h.backend.fetch_calls.clear()
    h(b"s SEARCH UNSEEN LARGER 1 UID 1:*")
    assert h.backend.fetch_calls == []  # flags and sizes need no decryption


# -- STORE


def test_store_variants(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.deliver()
    h.select()
    assert lines(h(b"s STORE 1:2 +FLAGS (\\Seen $Later)")) == [
        b"* FLAGS ($Later \\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* OK [PERMANENTFLAGS ($Later \\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)]"
        b" Flags permitted.",
        b"* 1 FETCH (UID 1 FLAGS ($Later \\Recent \\Seen))",
        b"* 2 FETCH (UID 2 FLAGS ($Later \\Recent \\Seen))",
        b"s OK STORE completed.",
    ]
    assert lines(h(b"s STORE 2 -FLAGS $Later")) == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent \\Seen))",
        b"s OK STORE completed.",
    ]
    assert h(b"s UID STORE 1 FLAGS.SILENT (\\Answered)") == b"s OK STORE completed.\r\n"
    assert h.flags(1) == {"\\Answered"}
    assert h(b"s STORE 1 +FLAGS \\Recent").startswith(b"s BAD Unknown or read-only system flag")


def test_modseq_moves_once_per_change(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver()
    h.select()

    def highest() -> bytes:
        # STATUS HIGHESTMODSEQ enables CONDSTORE: the first one also says * OK [HIGHESTMODSEQ]
        return lines(h(b"t STATUS INBOX (HIGHESTMODSEQ)"))[-2]

    assert highest() == b'* STATUS "INBOX" (HIGHESTMODSEQ 4)'
    h(b"s STORE 1:3 +FLAGS.SILENT (\\Seen \\Deleted)")
    assert highest() == b'* STATUS "INBOX" (HIGHESTMODSEQ 5)'  # three messages, one change
    h(b"s STORE 1:3 +FLAGS.SILENT (\\Seen)")
    assert highest() == b'* STATUS "INBOX" (HIGHESTMODSEQ 5)'  # nothing changed
    h(b"x EXPUNGE")
    assert highest() == b'* STATUS "INBOX" (HIGHESTMODSEQ 6)'
    assert h.backend.snapshot(USER, "INBOX").uid_next == 4


def test_store_in_examined_mailbox_is_refused(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.login()
    h(b"e EXAMINE INBOX")
    assert h(b"s STORE 1 +FLAGS \\Seen") == b"s NO [READ-ONLY] Mailbox is read-only.\r\n"
    assert h(b"x EXPUNGE") == b"x NO [READ-ONLY] Mailbox is read-only.\r\n"


# -- EXPUNGE and message numbers


def test_expunge_keeps_message_numbers_right(backend: MailBackend):
    h = Harness(backend)
    for _ in range(5):
        h.deliver()
    h.select()
    h(b"s STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert lines(h(b"x EXPUNGE")) == [b"* 4 EXPUNGE", b"* 2 EXPUNGE", b"x OK EXPUNGE completed."]
    assert lines(h(b"f FETCH 1:* UID")) == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 3)",
        b"* 3 FETCH (UID 5)",
        b"f OK FETCH completed.",
    ]
    assert h(b"f FETCH 4 UID") == b"f BAD No such message sequence number\r\n"


def test_uid_expunge_only_touches_named_uids(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver(flags=("\\Deleted",))
    h.select()
    assert lines(h(b"x UID EXPUNGE 1,3")) == [
        b"* 3 EXPUNGE",
        b"* 1 EXPUNGE",
        b"x OK EXPUNGE completed.",
    ]
    assert h.uids() == [2]
    assert b"UIDPLUS" in h(b"c CAPABILITY")


def test_close_expunges_silently_unselect_does_not(backend: MailBackend):
    h = Harness(backend)
    h.deliver(flags=("\\Deleted",))
    h.select()
    assert h(b"u UNSELECT") == b"u OK UNSELECT completed.\r\n"
    assert h.state.state is State.AUTHENTICATED
    assert h.uids() == [1]
    h(b"s SELECT INBOX")
    assert h(b"c CLOSE") == b"c OK CLOSE completed.\r\n"
    assert h.uids() == []
    h(b"e EXAMINE INBOX")
    assert h(b"c CLOSE") == b"c OK CLOSE completed.\r\n"


# -- what other sessions did, reported at the right time


def test_noop_reports_new_mail_flag_changes_and_expunges(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver()
    h.select()
    other = backend.other_session(USER)
    other.store_flags("INBOX", [1, 3], frozenset({"\\Deleted"}), FlagMode.ADD)
    other.store_flags("INBOX", [2], frozenset({"\\Flagged"}), FlagMode.ADD)
    h.deliver()
    assert lines(h(b"n NOOP")) == [
        b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))",
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Deleted \\Recent))",
        b"* 4 EXISTS",
        b"* 4 RECENT",
        b"n OK NOOP completed.",
    ]
    other.expunge("INBOX")
    # FETCH must not report expunges (RFC 3501 7.4.1): numbers stay as the client knows them
    assert lines(h(b"f FETCH 3 UID")) == [b"* 3 FETCH (UID 3)", b"f OK FETCH completed."]
    assert lines(h(b"n NOOP")) == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"n OK NOOP completed."]
    assert lines(h(b"f FETCH 1:* UID")) == [
        b"* 1 FETCH (UID 2)",
        b"* 2 FETCH (UID 4)",
        b"f OK FETCH completed.",
    ]


def test_uid_commands_may_report_expunges(backend: MailBackend):
    h = Harness(backend)
    h.deliver(flags=("\\Deleted",))
    h.deliver()
    h.select()
    backend.other_session(USER).expunge("INBOX")
    assert lines(h(b"f UID FETCH 1:* FLAGS")) == [
        b"* 1 EXPUNGE",
        b"* 1 FETCH (UID 2 FLAGS (\\Recent))",
        b"f OK FETCH completed.",
    ]


def test_new_keyword_from_elsewhere_updates_flags(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    backend.other_session(USER).store_flags("INBOX", [1], frozenset({"$Junk"}), FlagMode.ADD)
    out = lines(h(b"n NOOP"))
    assert out[0] == b"* FLAGS ($Junk \\Answered \\Deleted \\Draft \\Flagged \\Seen)"
    assert out[2] == b"* 1 FETCH (UID 1 FLAGS ($Junk \\Recent))"


def test_selected_mailbox_vanishing_says_bye(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    backend.remove_folder(USER, "INBOX")
    assert h(b"n NOOP") == b"* BYE The selected mailbox no longer exists.\r\n"
    assert h.state.state is State.LOGOUT


# -- configuration


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_line", 0),
        ("max_line", 100),
        ("max_literal", -1),
        ("bad_command_limit", 0),
        ("idle_timeout", 0.0),
        ("fetch_batch", True),
        ("fetch_batch_octets", 0),
        ("max_mime_depth", 0),
        ("max_mime_parts", -1),
        ("server_name", "two\r\nlines"),
        ("loopback_plaintext_login", "yes"),
        ("login_idle_timeout", 0),
    ],
)
def test_config_rejects_bad_values_naming_the_setting(setting: str, value: object):
    with pytest.raises(ValueError, match=setting):
        ImapConfig(**{setting: value})  # type: ignore[arg-type]


def test_the_fetch_budget_is_a_gateway_setting(tmp_path: Path):
    toml = tmp_path / "gateway.toml"
    toml.write_text(
        "imap_fetch_batch_octets = 4096\nimap_max_mime_parts = 9\nimap_idle_poll = 2.5\n"
        "imap_storage_threads = 3\nmax_message_bytes = 100000\n"
    )
    config = load_settings(GatewayConfig, read_toml(toml), {"home": tmp_path}, source="g.toml")
    imap = config.imap_config()
    assert (imap.fetch_batch_octets, imap.max_mime_parts) == (4096, 9)
    assert (imap.idle_poll, imap.storage_threads, imap.max_append) == (2.5, 3, 100_000)
    for name in (
        "imap_fetch_batch_octets",
        "imap_max_mime_depth",
        "imap_max_mime_parts",
        "imap_idle_poll",
        "imap_storage_threads",
    ):
        with pytest.raises(SettingsError, match=f"setting '{name}': must be positive"):
            load_settings(GatewayConfig, {name: 0}, {"home": tmp_path})


def test_every_imap_limit_is_a_gateway_setting(tmp_path: Path):
    """Each ImapConfig field but the server name comes from a setting of its own."""
    names = [f.name for f in dataclasses.fields(ImapConfig) if f.name != "server_name"]
    values: dict[str, object] = {}
    for n, name in enumerate(names):
        default = getattr(ImapConfig(), name)
        if isinstance(default, bool):
            values[name] = not default
        elif default is None:  # a quota: None is no limit
            values[name] = 1_000 + n
        else:
            values[name] = type(default)(default // 2 + n + 1)  # distinct from every other
    toml = "".join(
        f"{'max_message_bytes' if name == 'max_append' else 'imap_' + name} = "
        f"{str(value).lower() if isinstance(value, bool) else value}\n"
        for name, value in values.items()
    )
    (tmp_path / "g.toml").write_text(toml)
    config = load_settings(GatewayConfig, read_toml(tmp_path / "g.toml"), {"home": tmp_path})
    imap = config.imap_config()
    assert {name: getattr(imap, name) for name in names} == values
    with pytest.raises(SettingsError, match="setting 'imap_max_line': must be at least 1024"):
        load_settings(GatewayConfig, {"imap_max_line": 100}, {"home": tmp_path})
    with pytest.raises(SettingsError, match="setting 'imap_login_idle_timeout': must be pos"):
        load_settings(GatewayConfig, {"imap_login_idle_timeout": 0}, {"home": tmp_path})


def test_config_limits_must_fit_each_other():
    with pytest.raises(ValueError, match="max_command"):
        ImapConfig(max_line=4096, max_command=2048, max_literal=1024)
    assert ImapConfig(max_literal=64 * 2**20).max_command == 262_144  # APPEND-sized literals
    assert dataclasses.replace(ImapConfig(), idle_timeout=0.5).idle_timeout == 0.5
