"""What a command hands back to the server: `Reply` (responses, then an action), the
actions the server carries out (`LoginRequest`, `StartTlsRequest`, `IdleRequest`), the
connection `State`, and the small response helpers every handler shares.

Pure data and functions: no storage call, no asyncio.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.imap.backend import BackendError
from gateway.imap.protocol import (
    Code,
    CommandFailed,
    Response,
    Status,
    Tagged,
)

SEEN = "\\Seen"
DELIMITER = "/"
# Extensions that change response shapes once enabled (RFC 7162), as `ImapState.enabled`
# holds them.
CONDSTORE = "CONDSTORE"
QRESYNC = "QRESYNC"


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """Run `Authenticator.login(username, password)` off the loop, then `finish_login`."""

    tag: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"LoginRequest(tag={self.tag!r}, username=..., password=...)"


@dataclass(frozen=True, slots=True)
class StartTlsRequest:
    """After sending the responses, upgrade the stream to TLS, then call `tls_started`."""


@dataclass(frozen=True, slots=True)
class IdleRequest:
    """After the `+`, push `idle_updates` whenever storage signals a change, until the
    client's DONE line arrives (`finish_idle`)."""

    tag: str


class LoginFailure(enum.Enum):
    BAD_CREDENTIALS = "bad credentials"  # AuthenticationFailed
    UNAVAILABLE = "unavailable"  # storage failed, or too many logins at once: try later
    BLOCKED = "blocked"  # too many failed logins from this client: NO, then BYE


Action = LoginRequest | StartTlsRequest | IdleRequest | None


@dataclass(frozen=True, slots=True)
class Reply:
    """What a command produced: responses to send in order, then an action for the server.

    `responses` may be a lazy iterable (FETCH yields message by message and reads storage
    as it goes): the server consumes it off the event loop."""

    responses: Iterable[Response]
    action: Action = None


def ok(tag: str, text: str, code: Code | None = None) -> Tagged:
    return Tagged(tag, Status.OK, text, code)


_BACKEND_TEXTS = {
    "NONEXISTENT": "No such mailbox.",
    "TRYCREATE": "No such mailbox; create it first.",
    "ALREADYEXISTS": "Mailbox already exists.",
    "HASCHILDREN": "Mailbox has inferior mailboxes; delete them first.",
    "AUTHENTICATIONFAILED": "Authentication failed.",
    "UNAVAILABLE": "The mail store is busy or unreachable; try again.",
}

_OWN_TEXTS = frozenset({"CANNOT", "TOOBIG"})


def backend_failure(error: BackendError) -> CommandFailed:
    """A storage error as the tagged NO it becomes (its code from the backend's tree)."""
    text = _BACKEND_TEXTS.get(error.code)
    if text is None and error.code in _OWN_TEXTS:
        # CANNOT and TOOBIG say which rule in words a user can read, never with a name.
        message = str(error)
        text = f"{message[:1].upper()}{message[1:]}."
    return CommandFailed(Status.NO, text or "The mail store failed.", Code(error.code))
