"""Handlers of the NOT AUTHENTICATED state (RFC 3501 section 6.2): STARTTLS, LOGIN,
AUTHENTICATE PLAIN (with SASL-IR), and what follows a login the server carried out."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import MailSession
from gateway.imap.protocol import (
    Code,
    CommandFailed,
    Continuation,
    Response,
    Status,
    Tagged,
    UntaggedStatus,
)
from gateway.imap.session.reply import (
    LoginFailure,
    LoginRequest,
    Reply,
    StartTlsRequest,
    State,
    ok,
)

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState


def do_starttls(s: ImapState, cmd: protocol.StartTls) -> Reply:
    if s.tls_active:
        raise CommandFailed(Status.BAD, "TLS is already active.")
    if not s.tls_available:
        raise CommandFailed(Status.BAD, "STARTTLS is not available.")
    return Reply([ok(cmd.tag, "Begin TLS negotiation now.")], StartTlsRequest())


def _require_login_allowed(s: ImapState) -> None:
    if not s.login_allowed:
        raise CommandFailed(
            Status.NO, "Log in over TLS: use STARTTLS first.", Code("PRIVACYREQUIRED")
        )


def do_login(s: ImapState, cmd: protocol.Login) -> Reply:
    _require_login_allowed(s)
    return Reply([], LoginRequest(cmd.tag, cmd.userid, cmd.password))


def do_authenticate(s: ImapState, cmd: protocol.Authenticate) -> Reply:
    if cmd.mechanism != "PLAIN":
        raise CommandFailed(Status.NO, "Unsupported authentication mechanism.", Code("CANNOT"))
    _require_login_allowed(s)
    if cmd.initial_response is None:
        s.sasl_tag = cmd.tag
        return Reply([Continuation("")])
    return _plain(cmd.tag, cmd.initial_response)


def continuation(s: ImapState, line: bytes) -> Reply:
    """The client's answer to a `+` challenge (AUTHENTICATE without initial response)."""
    tag, s.sasl_tag = s.sasl_tag, None
    if tag is None:
        return s.count_bad([UntaggedStatus(Status.BAD, "Unexpected continuation.")])
    if line.strip() == b"*":
        return s.bad(tag, "Authentication cancelled.")
    try:
        response = base64.b64decode(line.strip(), validate=True)
    except binascii.Error:
        return s.bad(tag, "Invalid base64 in the authentication response.")
    try:
        return _plain(tag, response)
    except CommandFailed as failure:
        return s.failed(tag, failure)


def _plain(tag: str, response: bytes) -> Reply:
    """SASL PLAIN (RFC 4616): authzid NUL authcid NUL password."""
    pieces = response.split(b"\0")
    if len(pieces) != 3:
        raise CommandFailed(Status.BAD, "Malformed PLAIN response.")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in pieces)
    except UnicodeDecodeError as exc:
        raise CommandFailed(Status.BAD, "PLAIN response is not UTF-8.") from exc
    if authzid and authzid != authcid:
        raise CommandFailed(
            Status.NO, "Acting as another user is not supported.", Code("AUTHORIZATIONFAILED")
        )
    return Reply([], LoginRequest(tag, authcid, password))


def finish_login(s: ImapState, request: LoginRequest, result: MailSession | LoginFailure) -> Reply:
    """The outcome of a LoginRequest the server carried out."""
    if isinstance(result, LoginFailure):
        if result is LoginFailure.UNAVAILABLE:
            text = "Login is unavailable; try again later."
            return Reply([Tagged(request.tag, Status.NO, text, Code("UNAVAILABLE"))])
        if result is LoginFailure.BLOCKED:
            s.state = State.LOGOUT
            text = "Too many failed logins from your address; try again later."
            return Reply(
                [
                    Tagged(request.tag, Status.NO, text, Code("UNAVAILABLE")),
                    UntaggedStatus(Status.BYE, "Too many failed logins."),
                ]
            )
        s.login_failures += 1
        responses: list[Response] = [
            Tagged(request.tag, Status.NO, "Authentication failed.", Code("AUTHENTICATIONFAILED"))
        ]
        if s.login_failures >= s.config.max_login_failures:
            s.state = State.LOGOUT
            responses.append(UntaggedStatus(Status.BYE, "Too many failed logins."))
        return Reply(responses)
    s.session = result
    s.state = State.AUTHENTICATED
    return Reply([ok(request.tag, "Logged in.", s.capability_code())])
