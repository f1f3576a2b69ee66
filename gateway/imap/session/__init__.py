"""One IMAP session over a mail store: the command table, handlers by state, the
selected-mailbox view. Sans-I/O: `server` feeds it commands and carries out its actions.
"""

from gateway.imap.session.connection import ImapState
from gateway.imap.session.reply import (
    IdleRequest,
    LoginFailure,
    LoginRequest,
    Reply,
    StartTlsRequest,
    State,
)

__all__ = [
    "IdleRequest",
    "ImapState",
    "LoginFailure",
    "LoginRequest",
    "Reply",
    "StartTlsRequest",
    "State",
]
